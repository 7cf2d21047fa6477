//! `vmm new`: a new plugin crate from a template. A VxD, a DLL, a Windows
//! application or a DOS program, each a standalone cargo crate (a workspace
//! of its own) with a `system.ini` that runs it and a test that boots that
//! machine with the test kit. The templates live in `host/cli/templates/`.

use std::fmt;
use std::path::{Path, PathBuf};

use vmm_host::error::{Error, Result};

/// What `vmm new` creates.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A virtual device.
    Vxd,
    /// A 16-bit Windows DLL.
    Dll,
    /// A Windows application.
    App,
    /// A DOS program.
    Dos,
}

impl Kind {
    /// The word `vmm new` takes.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Vxd => "vxd",
            Kind::Dll => "dll",
            Kind::App => "app",
            Kind::Dos => "dos",
        }
    }

    /// How the docs call it.
    fn noun(self) -> &'static str {
        match self {
            Kind::Vxd => "VxD",
            Kind::Dll => "Windows DLL",
            Kind::App => "Windows application",
            Kind::Dos => "DOS program",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// Where the generated crate gets `vmm-plugin-api` (and the test kit,
/// `vmm-testkit`, which is always a path dependency).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sdk {
    /// `vmm-plugin-api` from this directory (a checkout's `plugin-api`); the
    /// test kit from the `host/testkit` directory next to it.
    Path(PathBuf),
    /// `vmm-plugin-api` of this version from the registry; the test kit from
    /// the `host/testkit` directory of this `vmm`'s sources.
    Version(String),
}

/// What to create.
#[derive(Clone, Debug)]
pub struct NewPlugin {
    /// VxD, DLL, application or DOS program.
    pub kind: Kind,
    /// The name: the crate's name in lower case; the DDB or module name in
    /// upper case.
    pub name: String,
    /// A VxD's device ID (`0xNNNN`); with it the VxD has a PM API.
    pub id: Option<String>,
    /// The directory to create (default: `./<crate name>`).
    pub dir: Option<PathBuf>,
    /// Where the SDK comes from (default: this `vmm`'s sources).
    pub sdk: Option<Sdk>,
}

/// What was created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The crate (package) name.
    pub crate_name: String,
    /// The DDB or module name.
    pub module_name: String,
    /// The device ID, for a VxD created with one.
    pub device_id: Option<u16>,
    /// The files written, relative to `dir` (the workspace's files, which
    /// lie outside it, by their whole path).
    pub files: Vec<PathBuf>,
    /// When the crate joined a workspace `vmm new` made: what changed there.
    pub workspace: Option<Joined>,
}

/// How a new crate joined the workspace it was created in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The workspace's root directory.
    pub root: PathBuf,
    /// The root package whose tests now build and run the new crate, if
    /// the root is a package.
    pub host_package: Option<String>,
    /// The test written into the root package for the two together.
    pub test: Option<PathBuf>,
}

/// The directory of this `vmm`'s `plugin-api` sources, the default SDK.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..").join("plugin-api")
}

/// Create the crate; nothing is written if an input is refused.
pub fn create(new: &NewPlugin) -> Result<Created> {
    let names = Names::of(new.kind, &new.name)?;
    let device_id = match (&new.id, new.kind) {
        (Some(id), Kind::Vxd) => Some(parse_device_id(id)?),
        (Some(id), kind) => {
            return Err(invalid("--id", id, &format!("only a VxD has a device ID, not a {kind}")));
        }
        (None, _) => None,
    };
    let dir = new.dir.clone().unwrap_or_else(|| PathBuf::from(&names.crate_name));
    check_target_dir(&dir)?;
    let (plugin_api, testkit) = dependencies(new.sdk.as_ref())?;
    let workspace = Workspace::enclosing(&dir)?;
    let target = match &workspace {
        Some(w) => w.target_from(&dir)?,
        None => "target".to_string(),
    };
    let vars = Vars {
        crate_name: &names.crate_name,
        lib: &names.lib,
        name: &names.module,
        type_name: &names.type_name,
        id: device_id.map(|id| format!("{id:#06X}").replace("0X", "0x")).unwrap_or_default(),
        kind: new.kind,
        plugin_api: &plugin_api,
        testkit: &testkit,
        target: &target,
    };
    let flags = [("api", device_id.is_some()), ("root", workspace.is_none())];
    let (lib_rs, test_rs, ini) = match new.kind {
        Kind::Vxd => (VXD_RS, VXD_TEST_RS, VXD_INI),
        Kind::Dll => (DLL_RS, DLL_TEST_RS, DLL_INI),
        Kind::App => (APP_RS, APP_TEST_RS, APP_INI),
        Kind::Dos => (DOS_RS, DOS_TEST_RS, DOS_INI),
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml", CARGO_TOML),
        ("README.md", README_MD),
        ("system.ini", ini),
        ("src/lib.rs", lib_rs),
        ("tests/machine.rs", test_rs),
    ]
    .into_iter()
    .chain(
        workspace
            .is_none()
            .then_some([(".gitignore", GITIGNORE), ("rustfmt.toml", RUSTFMT_TOML)])
            .into_iter()
            .flatten(),
    )
    .map(|(file, template)| (dir.join(file), render(template, &vars, &flags)))
    .collect();
    // In a workspace `vmm new` made: the root's manifest gains the member
    // (and, for its tests, the `uses` entry and a test that runs both).
    let mut joined = None;
    if let Some(w) = &workspace {
        let join = w.join(&dir, &names, new.kind)?;
        files.extend(join.files.iter().cloned());
        joined = Some(join);
    }
    let io = |path: &Path, e: std::io::Error| Error::Io { path: path.to_path_buf(), message: e.to_string() };
    let mut written = Vec::new();
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        written.push(path.strip_prefix(&dir).map(Path::to_path_buf).unwrap_or(path));
    }
    let workspace = joined.map(|j| j.summary);
    Ok(Created { dir, crate_name: names.crate_name, module_name: names.module, device_id, files: written, workspace })
}

const CARGO_TOML: &str = include_str!("../templates/Cargo.toml.tmpl");
const GITIGNORE: &str = include_str!("../templates/gitignore.tmpl");
const RUSTFMT_TOML: &str = include_str!("../templates/rustfmt.toml.tmpl");
const README_MD: &str = include_str!("../templates/README.md.tmpl");
const VXD_RS: &str = include_str!("../templates/vxd.rs.tmpl");
const VXD_TEST_RS: &str = include_str!("../templates/vxd_test.rs.tmpl");
const VXD_INI: &str = include_str!("../templates/vxd.ini.tmpl");
const DLL_RS: &str = include_str!("../templates/dll.rs.tmpl");
const DLL_TEST_RS: &str = include_str!("../templates/dll_test.rs.tmpl");
const DLL_INI: &str = include_str!("../templates/dll.ini.tmpl");
const APP_RS: &str = include_str!("../templates/app.rs.tmpl");
const APP_TEST_RS: &str = include_str!("../templates/app_test.rs.tmpl");
const APP_INI: &str = include_str!("../templates/app.ini.tmpl");
const DOS_RS: &str = include_str!("../templates/dos.rs.tmpl");
const DOS_TEST_RS: &str = include_str!("../templates/dos_test.rs.tmpl");
const DOS_INI: &str = include_str!("../templates/dos.ini.tmpl");

/// The names a plugin's name gives.
#[derive(Debug, PartialEq, Eq)]
struct Names {
    /// The package name: `my-vxd`.
    crate_name: String,
    /// The library (Rust crate) name: `my_vxd`, the file `libmy_vxd.so`.
    lib: String,
    /// The DDB or module name: `MY_VXD`.
    module: String,
    /// The Rust type: `MyVxd`.
    type_name: String,
}

/// Rust's keywords, which cannot name a library crate.
const KEYWORDS: [&str; 51] = [
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro", "match", "mod",
    "move", "mut", "override", "priv", "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true",
    "try", "type", "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Names of the standard library's crates, which cargo refuses.
const RESERVED_CRATES: [&str; 5] = ["std", "core", "alloc", "proc_macro", "test"];

impl Names {
    fn of(kind: Kind, name: &str) -> Result<Names> {
        let bad = |why: &str| Err(invalid("name", name, why));
        if name.is_empty() {
            return bad("give the plugin a name, for example `vmm new vxd vhello`");
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return bad(&format!("`{c}` cannot be part of a crate name: use ASCII letters, digits, `-` and `_`"));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return bad("a crate name starts with a letter");
        }
        let crate_name = name.to_ascii_lowercase();
        let lib = crate_name.replace('-', "_");
        if KEYWORDS.contains(&lib.as_str()) || RESERVED_CRATES.contains(&lib.as_str()) {
            return bad(&format!("`{lib}` is reserved in Rust and cannot name a crate"));
        }
        let module = lib.to_ascii_uppercase();
        if module.len() > 8 {
            let what = match kind {
                Kind::Vxd => "a VxD's DDB name is 1 to 8 characters (DDB_Name is an 8-byte field)",
                _ => "a module name is 1 to 8 characters (an 8.3 file name)",
            };
            return bad(&format!("{what}, and this name gives `{module}` ({} characters)", module.len()));
        }
        let type_name = lib
            .split('_')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let mut c = p.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            })
            .collect();
        Ok(Names { crate_name, lib, module, type_name })
    }
}

/// Parse `--id`: `0xNNNN` (or decimal), a device ID a plugin may take.
fn parse_device_id(text: &str) -> Result<u16> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    let bad = |why: &str| Err(invalid("--id", text, why));
    let Ok(id) = parsed else {
        return bad("write the device ID as 0xNNNN, for example --id 0x3A20");
    };
    if id == 0 {
        return bad("0 is Undefined_Device_ID; leave out --id for a VxD without services or APIs");
    }
    if id > 0xFFFF {
        return bad("a device ID is 16 bits: 0x0001 to 0xFFFF");
    }
    let id = id as u16;
    if (0x8000..0xF000).contains(&id) {
        return bad("IDs 0x8000 to 0xEFFF have bit 15 set, which is reserved");
    }
    if let Some(name) = standard_device(id) {
        return bad(&format!("{id:#06X} is {name}'s ID; Windows loads only one device per ID"));
    }
    Ok(id)
}

/// The devices of Windows itself whose IDs the DDK defines.
fn standard_device(id: u16) -> Option<&'static str> {
    use vmm_plugin_api::ddk::*;
    [
        (VMM_DEVICE_ID, "VMM"),
        (DEBUG_DEVICE_ID, "DEBUG"),
        (VPICD_DEVICE_ID, "VPICD"),
        (VDMAD_DEVICE_ID, "VDMAD"),
        (VTD_DEVICE_ID, "VTD"),
        (V86MMGR_DEVICE_ID, "V86MMGR"),
        (VDD_DEVICE_ID, "VDD"),
        (VKD_DEVICE_ID, "VKD"),
        (DOSMGR_DEVICE_ID, "DOSMGR"),
        (SHELL_DEVICE_ID, "SHELL"),
        (VXDLDR_DEVICE_ID, "VXDLDR"),
        (VWIN32_DEVICE_ID, "VWIN32"),
    ]
    .iter()
    .find(|(i, _)| *i == id)
    .map(|(_, n)| *n)
}

/// Refuse a directory that exists and is not empty (or is a file).
fn check_target_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::DirectoryNotEmpty { path: dir.to_path_buf() });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if dir.is_file() => {
            Err(Error::Io { path: dir.to_path_buf(), message: format!("a file is in the way ({e})") })
        }
        Err(e) => Err(Error::Io { path: dir.to_path_buf(), message: e.to_string() }),
    }
}

/// The TOML values of the `vmm-plugin-api` and `vmm-testkit` dependencies.
fn dependencies(sdk: Option<&Sdk>) -> Result<(String, String)> {
    let path_dep = |dir: &Path, what: &str, flag: &str| -> Result<String> {
        let dir = dir.canonicalize().map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            message: format!("{what} is not there ({e}); pass {flag}"),
        })?;
        if !dir.join("Cargo.toml").is_file() {
            return Err(Error::Io {
                path: dir.clone(),
                message: format!("{what} is not there (no Cargo.toml); pass {flag}"),
            });
        }
        Ok(format!("{{ path = {} }}", toml::Value::String(dir.display().to_string())))
    };
    let own_kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("testkit");
    match sdk {
        None => Ok((
            path_dep(&default_sdk_path(), "vmm's plugin-api", "--sdk-path DIR or --sdk-version VERSION")?,
            path_dep(&own_kit, "vmm's test kit (host/testkit)", "--sdk-path DIR")?,
        )),
        Some(Sdk::Path(dir)) => Ok((
            path_dep(dir, "the SDK (plugin-api)", "--sdk-path with a vmm checkout's plugin-api directory")?,
            path_dep(
                &dir.join("..").join("host").join("testkit"),
                "the test kit (host/testkit) next to the SDK",
                "--sdk-path",
            )?,
        )),
        Some(Sdk::Version(v)) => {
            if v.trim().is_empty() || v.contains(|c: char| c.is_whitespace() || c == '"') {
                return Err(invalid("--sdk-version", v, "write a version requirement such as 0.1"));
            }
            Ok((format!("\"{v}\""), path_dep(&own_kit, "vmm's test kit (host/testkit)", "--sdk-path DIR")?))
        }
    }
}

const WITH_MEMBER_RS: &str = include_str!("../templates/with_member.rs.tmpl");

/// A cargo workspace made by `vmm new` (its root `Cargo.toml` has a
/// `[workspace.metadata.vmm]` table), which new crates join as members.
struct Workspace {
    root: PathBuf,
    manifest: toml_edit::DocumentMut,
}

/// What joining changes: files to write, and what to tell the user.
struct Join {
    files: Vec<(PathBuf, String)>,
    summary: Joined,
}

impl Workspace {
    /// The workspace `dir` would be created in: the nearest directory above
    /// it with a `Cargo.toml` that has a `[workspace]` table, if that table
    /// has `metadata.vmm`. Another workspace (or none) leaves the new crate
    /// a workspace of its own.
    fn enclosing(dir: &Path) -> Result<Option<Workspace>> {
        let abs =
            std::path::absolute(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), message: e.to_string() })?;
        for parent in abs.ancestors().skip(1) {
            let file = parent.join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&file) else { continue };
            let manifest: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| Error::Io {
                path: file.clone(),
                message: format!("cannot read it to add the new crate as a member: {e}"),
            })?;
            let Some(ws) = manifest.get("workspace").and_then(|w| w.as_table_like()) else { continue };
            if ws.get("metadata").and_then(|m| m.get("vmm")).is_none() {
                return Ok(None);
            }
            return Ok(Some(Workspace { root: parent.to_path_buf(), manifest }));
        }
        Ok(None)
    }

    /// The workspace's target directory as `plugin_path` in the member's
    /// `system.ini` reaches it (relative to the member's directory).
    fn target_from(&self, dir: &Path) -> Result<String> {
        let rel = self.relative(dir)?;
        Ok(format!("{}target", "../".repeat(rel.components().count())))
    }

    fn relative(&self, dir: &Path) -> Result<PathBuf> {
        let abs =
            std::path::absolute(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), message: e.to_string() })?;
        abs.strip_prefix(&self.root).map(Path::to_path_buf).map_err(|_| Error::Io {
            path: dir.to_path_buf(),
            message: format!("not inside the workspace at {}", self.root.display()),
        })
    }

    /// Add `dir` to `[workspace] members`; when the root is a package, list
    /// the new crate in its `[package.metadata.vmm] uses` (so the test kit
    /// and `vmm run` build it with the root's plugin) and write a test of
    /// the two together.
    fn join(&self, dir: &Path, names: &Names, kind: Kind) -> Result<Join> {
        use toml_edit::{Array, Item, Table, value};
        let rel = self.relative(dir)?;
        let member = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        let file = self.root.join("Cargo.toml");
        let bad = |why: &str| Error::Io { path: file.clone(), message: why.to_string() };
        let mut doc = self.manifest.clone();
        let ws = doc["workspace"].as_table_like_mut().ok_or_else(|| bad("[workspace] is not a table"))?;
        let members = ws.entry("members").or_insert(Item::Value(Array::new().into()));
        let members = members.as_array_mut().ok_or_else(|| bad("[workspace] members is not an array"))?;
        if !members.iter().any(|m| m.as_str() == Some(member.as_str())) {
            members.push(member.as_str());
        }
        let mut summary = Joined { root: self.root.clone(), host_package: None, test: None };
        let mut files = Vec::new();
        let host = doc.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        if let Some(host) = host {
            let package = doc["package"].as_table_mut().ok_or_else(|| bad("[package] is not a table"))?;
            let metadata = package.entry("metadata").or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            });
            let vmm = metadata
                .as_table_like_mut()
                .ok_or_else(|| bad("[package.metadata] is not a table"))?
                .entry("vmm")
                .or_insert(Item::Table(Table::new()));
            let uses = vmm
                .as_table_like_mut()
                .ok_or_else(|| bad("[package.metadata.vmm] is not a table"))?
                .entry("uses")
                .or_insert(value(Array::new()));
            let uses = uses.as_array_mut().ok_or_else(|| bad("[package.metadata.vmm] uses is not an array"))?;
            if !uses.iter().any(|u| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(&names.module))) {
                uses.push(names.module.as_str());
            }
            if let Some((ext, layer)) = member_layer(kind, &names.module) {
                let host_lib = host.replace('-', "_");
                let test = self.root.join("tests").join(format!("with_{}.rs", names.lib));
                let vars = [
                    ("{{ROOT}}", host_lib.to_ascii_uppercase()),
                    ("{{root_lib}}", host_lib),
                    ("{{NAME}}", names.module.clone()),
                    ("{{LIB}}", names.lib.to_ascii_uppercase()),
                    ("{{lib}}", names.lib.clone()),
                    ("{{crate}}", names.crate_name.clone()),
                    ("{{kind}}", kind.word().to_string()),
                    ("{{ext}}", ext.to_string()),
                    ("{{started}}", if kind == Kind::Dll { "RUNDLL".to_string() } else { names.module.clone() }),
                    ("{{layer}}", layer),
                ];
                let text = vars.iter().fold(WITH_MEMBER_RS.to_string(), |t, (from, to)| t.replace(from, to));
                if !test.exists() {
                    files.push((test.clone(), text));
                    summary.test = Some(test);
                }
            }
            summary.host_package = Some(host);
        }
        files.push((file, doc.to_string()));
        Ok(Join { files, summary })
    }
}

/// The manifest layer that puts a new member into the root package's
/// machine, and the member's file extension; none for a VxD (a second
/// device goes into `[386Enh] device` by hand: the list is one key).
fn member_layer(kind: Kind, module: &str) -> Option<(&'static str, String)> {
    match kind {
        Kind::Dos => Some((".EXE", format!("[[vm]]\nname = \"{module}\"\nat = \"10ms\"\nprogram = \"{module}\"\n"))),
        Kind::App => Some((".EXE", format!("[windows]\nload = [\"{module}.EXE\"]\n"))),
        Kind::Dll => Some((".DLL", format!("[windows]\nload = [\"*RUNDLL {module}.DLL,Hello\"]\n"))),
        Kind::Vxd => None,
    }
}

fn invalid(what: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidInput { what, value: value.to_string(), reason: reason.to_string() }
}

/// The values a template refers to.
struct Vars<'a> {
    crate_name: &'a str,
    lib: &'a str,
    name: &'a str,
    type_name: &'a str,
    id: String,
    kind: Kind,
    plugin_api: &'a str,
    testkit: &'a str,
    target: &'a str,
}

/// Fill a template: `{{#flag}}...{{/flag}}` is kept only when `flag` is
/// set, `{{^flag}}...{{/flag}}` only when it is not (`api`: a VxD with a
/// device ID; `root`: a crate that is its own workspace); then the
/// placeholders.
fn render(template: &str, v: &Vars<'_>, flags: &[(&str, bool)]) -> String {
    let mut text = template.to_string();
    for (flag, set) in flags {
        for (open, keep) in [(format!("{{{{#{flag}}}}}"), *set), (format!("{{{{^{flag}}}}}"), !*set)] {
            let close = format!("{{{{/{flag}}}}}");
            while let Some(start) = text.find(&open) {
                let body_start = start + open.len();
                let body_end = text[body_start..].find(&close).map_or(text.len(), |e| body_start + e);
                let body = if keep { text[body_start..body_end].to_string() } else { String::new() };
                let after = (body_end + close.len()).min(text.len());
                text.replace_range(start..after, &body);
            }
        }
    }
    let description = format!("{} {} for the vmm emulator", v.kind.noun(), v.name);
    [
        ("{{crate}}", v.crate_name),
        ("{{lib}}", v.lib),
        ("{{NAME}}", v.name),
        ("{{Type}}", v.type_name),
        ("{{id}}", &v.id),
        ("{{kind}}", v.kind.word()),
        ("{{description}}", &description),
        ("{{plugin_api}}", v.plugin_api),
        ("{{testkit}}", v.testkit),
        ("{{target}}", v.target),
    ]
    .iter()
    .fold(text, |t, (from, to)| t.replace(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(kind: Kind, name: &str) -> std::result::Result<Names, String> {
        Names::of(kind, name).map_err(|e| e.to_string())
    }

    #[test]
    fn a_name_gives_the_crate_library_module_and_type_names() {
        let n = names(Kind::Vxd, "My-Vxd").unwrap();
        assert_eq!(
            (n.crate_name.as_str(), n.lib.as_str(), n.module.as_str(), n.type_name.as_str()),
            ("my-vxd", "my_vxd", "MY_VXD", "MyVxd")
        );
        assert_eq!(names(Kind::Dos, "ping").unwrap().module, "PING");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        assert!(names(Kind::Vxd, "").unwrap_err().contains("give the plugin a name"));
        assert!(names(Kind::Vxd, "9lives").unwrap_err().contains("starts with a letter"));
        assert!(names(Kind::Vxd, "v.hello").unwrap_err().contains("`.` cannot be part"));
        assert!(names(Kind::Vxd, "toolongname").unwrap_err().contains("DDB name is 1 to 8 characters"));
        assert!(names(Kind::Vxd, "toolongname").unwrap_err().contains("gives `TOOLONGNAME` (11 characters)"));
        assert!(names(Kind::App, "toolongname").unwrap_err().contains("module name"));
        assert!(names(Kind::Dll, "self").unwrap_err().contains("reserved"));
        assert!(names(Kind::Dll, "test").unwrap_err().contains("reserved"));
    }

    #[test]
    fn device_ids_are_checked() {
        assert_eq!(parse_device_id("0x3A20").unwrap(), 0x3A20);
        assert_eq!(parse_device_id("0XF123").unwrap(), 0xF123);
        assert_eq!(parse_device_id("300").unwrap(), 300);
        let err = |t: &str| parse_device_id(t).unwrap_err().to_string();
        assert!(err("0x0").contains("Undefined_Device_ID"));
        assert!(err("0x10000").contains("16 bits"));
        assert!(err("0x8001").contains("bit 15"));
        assert!(err("0x17").contains("SHELL"));
        assert!(err("3A20").contains("0xNNNN"));
    }

    #[test]
    fn sections_are_kept_or_dropped() {
        let v = Vars {
            crate_name: "c",
            lib: "c",
            name: "C",
            type_name: "C",
            id: "0x3A20".to_string(),
            kind: Kind::Vxd,
            plugin_api: "",
            testkit: "",
            target: "target",
        };
        let t = "a{{#api}}[{{id}}]{{/api}}b{{^api}}none{{/api}}c{{#root}}R{{/root}}";
        assert_eq!(render(t, &v, &[("api", true), ("root", false)]), "a[0x3A20]bc");
        assert_eq!(render(t, &v, &[("api", false), ("root", true)]), "abnonecR");
    }
}
