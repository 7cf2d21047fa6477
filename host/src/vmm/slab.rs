//! Generational slabs for VMM handles (events, time-outs, semaphores,
//! interrupt sources, SHELL's appy-time events and broadcast hooks).
//!
//! A handle is a `u32`: `tag | generation | index + 1`, never 0. The tag
//! says the kind of object and is a prefix code (`1` events, `01`
//! time-outs, `001` semaphores, `0001` interrupt sources, `00001` appy-time
//! events, `000001` broadcast hooks), so the kinds that come and go by the
//! million get the short tags. Each kind's index is as wide as the number
//! of live objects it must hold, and the generation takes every bit left:
//!
//! | Kind | Live objects | Generation bits: a stale handle matches again after |
//! |---|---|---|
//! | event | 2^20 - 1 | 11: 2,048 reuses of its slot |
//! | time-out | 2^20 - 1 | 10: 1,024 reuses |
//! | semaphore | 2^16 - 1 | 13: 8,192 reuses |
//! | interrupt source | 2^12 - 1 | 16: 65,536 reuses |
//! | appy-time event | 2^14 - 1 | 13: 8,192 reuses |
//! | broadcast hook | 2^12 - 1 | 14: 16,384 reuses |
//! | VPICD IRQ handle | 2^10 - 1 | 14: 16,384 reuses |

use std::marker::PhantomData;

/// Handle tags, one per kind of object: `(value, bits)` of the prefix.
pub(crate) const TAG_EVENT: Tag = Tag { value: 0b1, bits: 1, index_bits: 20 };
pub(crate) const TAG_TIMEOUT: Tag = Tag { value: 0b01, bits: 2, index_bits: 20 };
pub(crate) const TAG_SEMAPHORE: Tag = Tag { value: 0b001, bits: 3, index_bits: 16 };
pub(crate) const TAG_IRQ: Tag = Tag { value: 0b0001, bits: 4, index_bits: 12 };
pub(crate) const TAG_APPY: Tag = Tag { value: 0b0_0001, bits: 5, index_bits: 14 };
pub(crate) const TAG_BROADCAST_HOOK: Tag = Tag { value: 0b00_0001, bits: 6, index_bits: 12 };
/// VPICD's IRQ handles (`VPICD_Virtualize_IRQ`): an 8-bit prefix, so the
/// 7-bit ones stay free for kinds that come and go more often.
pub(crate) const TAG_VPICD: Tag = Tag { value: 0b0000_0001, bits: 8, index_bits: 10 };

/// The layout of one kind's handles.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    /// The prefix, in the top `bits` bits.
    value: u32,
    bits: u32,
    /// Bits of `index + 1` at the bottom; the generation sits between.
    index_bits: u32,
}

impl Tag {
    const fn shift(self) -> u32 {
        32 - self.bits
    }

    const fn index_mask(self) -> u32 {
        (1 << self.index_bits) - 1
    }

    /// The generations a slot goes through before its handles repeat.
    pub(crate) const fn generations(self) -> u32 {
        1 << (32 - self.bits - self.index_bits)
    }

    const fn generation_mask(self) -> u32 {
        self.generations() - 1
    }

    /// The masks and shifts, computed once per slab (handles are made and
    /// checked on the event hot path).
    const fn layout(self) -> Layout {
        Layout {
            prefix: self.value << self.shift(),
            shift: self.shift(),
            value: self.value,
            index_bits: self.index_bits,
            index_mask: self.index_mask(),
            generation_mask: self.generation_mask(),
        }
    }
}

/// A [`Tag`] ready for use.
#[derive(Copy, Clone)]
struct Layout {
    prefix: u32,
    shift: u32,
    value: u32,
    index_bits: u32,
    index_mask: u32,
    generation_mask: u32,
}

impl Layout {
    #[inline(always)]
    fn handle(self, generation: u32, index: usize) -> u32 {
        self.prefix | (generation << self.index_bits) | (index as u32 + 1)
    }
}

/// A handle into a slab of `T`s: the number the ABI and the trace carry,
/// typed by what it names, so an event handle is never taken for a
/// time-out's (the tag would refuse it at run time; the type refuses it
/// at compile time).
pub(crate) struct Handle<T> {
    raw: u32,
    of: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    /// The handle the ABI or trace number `raw` names (not checked: the
    /// slab says whether it is live).
    #[inline(always)]
    pub(crate) const fn from_raw(raw: u32) -> Self {
        Handle { raw, of: PhantomData }
    }

    /// The number the ABI and the trace carry.
    #[inline(always)]
    pub(crate) const fn raw(self) -> u32 {
        self.raw
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl<T> Eq for Handle<T> {}
impl<T> PartialOrd for Handle<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Handle<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.raw.cmp(&other.raw)
    }
}
impl<T> std::hash::Hash for Handle<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.raw.hash(state)
    }
}
impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#010x}", self.raw)
    }
}
impl<T> std::fmt::LowerHex for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::LowerHex::fmt(&self.raw, f)
    }
}
impl<T> std::fmt::UpperHex for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::UpperHex::fmt(&self.raw, f)
    }
}

struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

/// A slab whose keys are validated handles.
pub(crate) struct Slab<T> {
    tag: Layout,
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new(tag: Tag) -> Self {
        Slab { tag: tag.layout(), entries: Vec::new(), free: Vec::new(), len: 0 }
    }

    /// Insert; the new handle. `None` when all of the kind's slots are in
    /// use.
    #[inline(always)]
    pub(crate) fn insert(&mut self, value: T) -> Option<Handle<T>> {
        let (handle, place) = self.vacant()?;
        *place = Some(value);
        Some(handle)
    }

    /// Take a free slot for a new value: its handle and its place, which
    /// the caller fills at once with `Some` (the record is then built
    /// straight in the slab, not moved there). `None` when all of the
    /// kind's slots are in use.
    #[inline(always)]
    pub(crate) fn vacant(&mut self) -> Option<(Handle<T>, &mut Option<T>)> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.entries.len() as u32 >= self.tag.index_mask {
                    return None;
                }
                self.entries.push(Entry { generation: 0, value: None });
                self.entries.len() as u32 - 1
            }
        };
        let e = &mut self.entries[index as usize];
        debug_assert!(e.value.is_none(), "a free slab slot holds a value");
        e.generation = (e.generation + 1) & self.tag.generation_mask;
        self.len += 1;
        Some((Handle::from_raw(self.tag.handle(e.generation, index as usize)), &mut e.value))
    }

    #[inline]
    fn index(&self, handle: Handle<T>) -> Option<usize> {
        let handle = handle.raw;
        let tag = self.tag;
        if handle >> tag.shift != tag.value {
            return None;
        }
        let index = (handle & tag.index_mask).checked_sub(1)? as usize;
        let e = self.entries.get(index)?;
        (e.value.is_some() && e.generation == (handle >> tag.index_bits) & tag.generation_mask).then_some(index)
    }

    pub(crate) fn get(&self, handle: Handle<T>) -> Option<&T> {
        let i = self.index(handle)?;
        self.entries[i].value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, handle: Handle<T>) -> Option<&mut T> {
        let i = self.index(handle)?;
        self.entries[i].value.as_mut()
    }

    pub(crate) fn contains(&self, handle: Handle<T>) -> bool {
        self.index(handle).is_some()
    }

    pub(crate) fn remove(&mut self, handle: Handle<T>) -> Option<T> {
        self.take_if(handle, |_| true)
    }

    /// The slot `handle` names, valid or not (for [`Slab::at`] and
    /// [`Slab::take_at_into`], when the value itself proves it is the one meant).
    #[inline(always)]
    pub(crate) fn slot_of(&self, handle: Handle<T>) -> usize {
        ((handle.raw & self.tag.index_mask) as usize).wrapping_sub(1)
    }

    /// The value in slot `i`, if any.
    #[inline(always)]
    pub(crate) fn at(&self, i: usize) -> Option<&T> {
        self.entries.get(i)?.value.as_ref()
    }

    /// Move the value in slot `i` (see [`Slab::slot_of`]) into `out`, which
    /// holds `None` (written so that the value is moved once, straight
    /// into the caller's place). `out` stays `None` if the slot is empty.
    #[inline(always)]
    pub(crate) fn take_at_into(&mut self, i: usize, out: &mut Option<T>) {
        if let Some(e) = self.entries.get_mut(i)
            && e.value.is_some()
        {
            *out = e.value.take();
            self.free.push(i as u32);
            self.len -= 1;
        }
    }

    /// Remove the value of `handle` if `pred` accepts it.
    #[inline(always)]
    pub(crate) fn take_if(&mut self, handle: Handle<T>, pred: impl FnOnce(&T) -> bool) -> Option<T> {
        let i = self.index(handle)?;
        let slot = &mut self.entries[i].value;
        if !pred(slot.as_ref()?) {
            return None;
        }
        let v = slot.take();
        self.free.push(i as u32);
        self.len -= 1;
        v
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Live values, mutably, in slot order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Handle<T>, &mut T)> {
        let tag = self.tag;
        self.entries.iter_mut().enumerate().filter_map(move |(i, e)| {
            let generation = e.generation;
            e.value.as_mut().map(|v| (Handle::from_raw(tag.handle(generation, i)), v))
        })
    }

    /// Live handles and values, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Handle<T>, &T)> {
        let tag = self.tag;
        self.entries
            .iter()
            .enumerate()
            .filter_map(move |(i, e)| e.value.as_ref().map(|v| (Handle::from_raw(tag.handle(e.generation, i)), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_tagged_and_generational() {
        let mut s = Slab::new(TAG_EVENT);
        let a = s.insert("a").unwrap();
        assert_ne!(a.raw(), 0);
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        assert!(s.get(a).is_none(), "stale after removal");
        let b = s.insert("b").unwrap();
        assert_ne!(a, b, "same slot, new generation");
        assert!(s.get(a).is_none());
        let other: Slab<&str> = Slab::new(TAG_TIMEOUT);
        assert!(other.get(b).is_none(), "another kind's handle never validates");
        assert_eq!(s.len(), 1);
        assert!(s.get(Handle::from_raw(0)).is_none() && s.get(Handle::from_raw(u32::MAX)).is_none());
    }

    #[test]
    fn tags_are_a_prefix_code_and_handles_fill_32_bits() {
        let tags = [TAG_EVENT, TAG_TIMEOUT, TAG_SEMAPHORE, TAG_IRQ, TAG_APPY, TAG_BROADCAST_HOOK, TAG_VPICD];
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                // The longer prefix cut to the shorter one's length differs.
                let (short, long) = if a.bits <= b.bits { (a, b) } else { (b, a) };
                assert_ne!(long.value >> (long.bits - short.bits), short.value, "{a:?} and {b:?}");
            }
            let mut s: Slab<()> = Slab::new(*a);
            let h = s.insert(()).unwrap();
            assert_eq!(h.raw() >> a.shift(), a.value);
            assert!(a.generations() >= 1024, "{a:?}");
            assert!(s.contains(h));
            for other in tags.iter().filter(|t| *t != a) {
                let mut o: Slab<()> = Slab::new(*other);
                o.insert(());
                assert!(!o.contains(h), "{a:?} handle in a {other:?} slab");
            }
        }
    }

    #[test]
    fn a_stale_handle_stays_stale_for_every_generation_of_its_slot() {
        let mut s = Slab::new(TAG_EVENT);
        let first = s.insert(0u32).unwrap();
        s.remove(first);
        // The same slot, reused until just before the generation comes back.
        for n in 1..TAG_EVENT.generations() {
            let h = s.insert(n).unwrap();
            assert_eq!(s.slot_of(h), s.slot_of(first));
            assert!(!s.contains(first), "reuse {n} matched the stale handle");
            s.remove(h);
        }
        let again = s.insert(0).unwrap();
        assert_eq!(again, first, "the documented limit: the generation has come round");
    }

    #[test]
    fn a_value_taken_by_slot_frees_the_slot_once() {
        let mut s = Slab::new(TAG_EVENT);
        let a = s.insert("a").unwrap();
        let slot = s.slot_of(a);
        let mut out = None;
        s.take_at_into(slot, &mut out);
        assert_eq!(out, Some("a"));
        assert!(s.get(a).is_none() && s.len() == 0, "stale after the take");
        let mut again = None;
        s.take_at_into(slot, &mut again);
        assert_eq!(again, None, "an empty slot gives nothing");
        s.take_at_into(usize::MAX, &mut again);
        assert_eq!(again, None, "a slot out of range gives nothing");
        let b = s.insert("b").unwrap();
        let c = s.insert("c").unwrap();
        assert_eq!(s.slot_of(b), slot, "the slot was freed once and is reused");
        assert_ne!(s.slot_of(c), slot, "and not handed out twice");
    }
}
