//! Generational slabs for VMM handles (events, time-outs, semaphores,
//! interrupt sources, SHELL's appy-time events and broadcast hooks).
//!
//! A handle is `tag (3 bits) | generation (8 bits) | index + 1 (21 bits)`:
//! never 0, different for each kind of object, and a handle whose object is
//! gone stays invalid until its slot has been reused 256 times.

const INDEX_BITS: u32 = 21;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const GEN_SHIFT: u32 = INDEX_BITS;
const TAG_SHIFT: u32 = 29;

/// Handle tags, one per kind of object.
pub(crate) const TAG_EVENT: u32 = 1;
pub(crate) const TAG_TIMEOUT: u32 = 2;
pub(crate) const TAG_SEMAPHORE: u32 = 3;
pub(crate) const TAG_IRQ: u32 = 4;
pub(crate) const TAG_APPY: u32 = 5;
pub(crate) const TAG_BROADCAST_HOOK: u32 = 6;

struct Entry<T> {
    generation: u8,
    value: Option<T>,
}

/// A slab whose keys are validated handles.
pub(crate) struct Slab<T> {
    tag: u32,
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new(tag: u32) -> Self {
        Slab { tag, entries: Vec::new(), free: Vec::new(), len: 0 }
    }

    /// Insert; the new handle. `None` when all 2^21 slots are in use.
    #[inline(always)]
    pub(crate) fn insert(&mut self, value: T) -> Option<u32> {
        let (handle, place) = self.vacant()?;
        *place = Some(value);
        Some(handle)
    }

    /// Take a free slot for a new value: its handle and its place, which
    /// the caller fills at once with `Some` (the record is then built
    /// straight in the slab, not moved there). `None` when all 2^21 slots
    /// are in use.
    #[inline(always)]
    pub(crate) fn vacant(&mut self) -> Option<(u32, &mut Option<T>)> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.entries.len() as u32 >= INDEX_MASK {
                    return None;
                }
                self.entries.push(Entry { generation: 0, value: None });
                self.entries.len() as u32 - 1
            }
        };
        let e = &mut self.entries[index as usize];
        debug_assert!(e.value.is_none(), "a free slab slot holds a value");
        e.generation = e.generation.wrapping_add(1);
        self.len += 1;
        Some(((self.tag << TAG_SHIFT) | ((e.generation as u32) << GEN_SHIFT) | (index + 1), &mut e.value))
    }

    #[inline]
    fn index(&self, handle: u32) -> Option<usize> {
        if handle >> TAG_SHIFT != self.tag {
            return None;
        }
        let index = (handle & INDEX_MASK).checked_sub(1)? as usize;
        let e = self.entries.get(index)?;
        (e.value.is_some() && e.generation as u32 == (handle >> GEN_SHIFT) & 0xFF).then_some(index)
    }

    pub(crate) fn get(&self, handle: u32) -> Option<&T> {
        let i = self.index(handle)?;
        self.entries[i].value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, handle: u32) -> Option<&mut T> {
        let i = self.index(handle)?;
        self.entries[i].value.as_mut()
    }

    pub(crate) fn contains(&self, handle: u32) -> bool {
        self.index(handle).is_some()
    }

    pub(crate) fn remove(&mut self, handle: u32) -> Option<T> {
        self.take_if(handle, |_| true)
    }

    /// The slot `handle` names, valid or not (for [`Slab::at`] and
    /// [`Slab::take_at_into`], when the value itself proves it is the one meant).
    #[inline(always)]
    pub(crate) fn slot_of(&self, handle: u32) -> usize {
        ((handle & INDEX_MASK) as usize).wrapping_sub(1)
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
    pub(crate) fn take_if(&mut self, handle: u32, pred: impl FnOnce(&T) -> bool) -> Option<T> {
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
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        let tag = self.tag;
        self.entries.iter_mut().enumerate().filter_map(move |(i, e)| {
            let generation = e.generation as u32;
            e.value.as_mut().map(|v| ((tag << TAG_SHIFT) | (generation << GEN_SHIFT) | (i as u32 + 1), v))
        })
    }

    /// Live handles and values, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        let tag = self.tag;
        self.entries.iter().enumerate().filter_map(move |(i, e)| {
            e.value.as_ref().map(|v| ((tag << TAG_SHIFT) | ((e.generation as u32) << GEN_SHIFT) | (i as u32 + 1), v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_tagged_and_generational() {
        let mut s = Slab::new(TAG_EVENT);
        let a = s.insert("a").unwrap();
        assert_ne!(a, 0);
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        assert!(s.get(a).is_none(), "stale after removal");
        let b = s.insert("b").unwrap();
        assert_ne!(a, b, "same slot, new generation");
        assert!(s.get(a).is_none());
        let other: Slab<&str> = Slab::new(TAG_TIMEOUT);
        assert!(other.get(b).is_none(), "another kind's handle never validates");
        assert_eq!(s.len(), 1);
        assert!(s.get(0).is_none() && s.get(u32::MAX).is_none());
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
