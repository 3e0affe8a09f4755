//! `tierhost new tier NAME --lang rust|python|js`: writes a tier project that builds as
//! generated. Every project has the same shape, whatever the language:
//!
//! - the tier's source (a rule on `amount` against a `limit` param) and the guest SDK for its
//!   language, copied from this repository (`plugins/sdk`, `plugins/python`, `plugins/js`)
//!   into the project so it builds wherever it is moved;
//! - `wit/tier.wit`, the contract;
//! - `build.sh`, which produces `NAME.wasm` beside itself (installing the language's pinned
//!   component toolchain into the project on first use);
//! - `cascade.toml` (the tier, then the host's safe default, with limits sized for the
//!   language), `samples.jsonl` and `expected.txt`, and `test.sh`, which builds and answers
//!   every sample through `tierhost run`, comparing label and serving tier;
//! - a README with the commands.
//!
//! Nothing is written over an existing file: the target directory must be new or empty.
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The language of a new tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// A Rust `cdylib` built for wasm32-wasip2 against the guest SDK.
    Rust,
    /// A Python module built into a component by componentize-py.
    Python,
    /// A JavaScript module built into a component by componentize-js.
    Js,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

/// What the new tier is (its `describe` kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    Rules,
    Model,
    SafeDefault,
    Other,
}

impl Kind {
    fn rust_variant(self) -> &'static str {
        match self {
            Kind::Rules => "Rules",
            Kind::Model => "Model",
            Kind::SafeDefault => "SafeDefault",
            Kind::Other => "Other",
        }
    }

    fn python_variant(self) -> &'static str {
        match self {
            Kind::Rules => "RULES",
            Kind::Model => "MODEL",
            Kind::SafeDefault => "SAFE_DEFAULT",
            Kind::Other => "OTHER",
        }
    }

    /// The `tier-kind` case as WIT (and JavaScript) names it.
    fn wit(self) -> &'static str {
        match self {
            Kind::Rules => "rules",
            Kind::Model => "model",
            Kind::SafeDefault => "safe-default",
            Kind::Other => "other",
        }
    }

    fn doc(self) -> &'static str {
        match self {
            Kind::Rules => "rules",
            Kind::Model => "model",
            Kind::SafeDefault => "safe-default",
            Kind::Other => "custom",
        }
    }
}

const WIT: &str = include_str!("../../wit/tier.wit");
const SAMPLES: &str = include_str!("../templates/new/common/samples.jsonl");
const EXPECTED: &str = include_str!("../templates/new/common/expected.txt");
const CASCADE: &str = include_str!("../templates/new/common/cascade.toml");
const TEST_SH: &str = include_str!("../templates/new/common/test.sh");
const README: &str = include_str!("../templates/new/common/README.md");

const RUST_CARGO: &str = include_str!("../templates/new/rust/Cargo.toml");
const RUST_LIB: &str = include_str!("../templates/new/rust/lib.rs");
const RUST_BUILD: &str = include_str!("../templates/new/rust/build.sh");
const RUST_SDK_CARGO: &str = include_str!("../templates/new/rust/sdk.Cargo.toml");
const RUST_SDK_LIB: &str = include_str!("../../plugins/sdk/src/lib.rs");

const PYTHON_APP: &str = include_str!("../templates/new/python/app.py");
const PYTHON_BUILD: &str = include_str!("../templates/new/python/build.sh");
const PYTHON_SDK: &str = include_str!("../../plugins/python/tierhost_tier.py");
const JS_APP: &str = include_str!("../templates/new/js/app.js");
const JS_BUILD: &str = include_str!("../templates/new/js/build.sh");
const JS_PACKAGE: &str = include_str!("../templates/new/js/package.json");
const JS_SDK: &str = include_str!("../../plugins/js/tierhost_tier.js");
/// The componentize-py release the Python template pins (as scripts/polyglot.sh does).
const COMPONENTIZE_PY: &str = "0.25.1";

/// One file of a project: path relative to the project, contents, executable or not.
struct File {
    path: &'static str,
    contents: String,
    executable: bool,
}

/// Checks a tier name: it becomes a directory, a Cargo package, a file name and a cascade
/// tier name, so it is kept to lowercase ASCII letters, digits and inner hyphens.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "tier name {name:?}: use 1-64 lowercase ASCII letters, digits and single inner \
             hyphens, starting with a letter (e.g. `card-rules`)"
        );
    }
    if name == "safe-default" {
        bail!("tier name \"safe-default\" is the host's own last tier");
    }
    Ok(())
}

/// `card-rules` -> `CardRules`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// The files of a new project.
fn files(name: &str, lang: Lang, kind: Kind) -> Vec<File> {
    let crate_name = name.replace('-', "_");
    let type_name = type_name(name);
    let (engine, budget_ms, instances_line, limits, build_cmd, source) = match lang {
        Lang::Rust => (
            "",
            "100",
            "",
            "deadline_ms = 20",
            "cargo build --release --target wasm32-wasip2",
            "src/lib.rs",
        ),
        // An 18 MB Python component: ~0.5 M fuel and ~2 ms per fresh-instance call measured
        // (Rust: ~26 k fuel, ~10 us), so more fuel and deadline; warm instances (`reuse`) avoid
        // re-instantiating the interpreter on every call.
        Lang::Python => (
            // Compiling 18 MB takes seconds: keep the compiled component for the next start.
            "# Compiled components are kept here: an 18 MB Python tier compiles in seconds.\n[engine]\ncache_dir = \".tierhost-cache\"\n\n",
            "200",
            "instances = \"reuse\"\n",
            "deadline_ms = 100\nfuel = 50_000_000\nmax_memory_mib = 64",
            "componentize-py -d wit -w tier componentize app",
            "app.py",
        ),
        // A 12 MB JavaScript component: ~2.5 M fuel and ~0.7 ms per fresh-instance call
        // measured, ~0.17 ms reused.
        Lang::Js => (
            "# Compiled components are kept here: a 12 MB JavaScript tier compiles in seconds.\n[engine]\ncache_dir = \".tierhost-cache\"\n\n",
            "200",
            "instances = \"reuse\"\n",
            "deadline_ms = 100\nfuel = 50_000_000\nmax_memory_mib = 64",
            "componentize-js app.js --wit wit --world-name tier -d http fetch-event",
            "app.js",
        ),
    };
    let vars = [
        ("name", name),
        ("crate_name", crate_name.as_str()),
        ("type_name", type_name.as_str()),
        ("kind_variant", kind.rust_variant()),
        ("kind_doc", kind.doc()),
        ("kind_wit", kind.wit()),
        ("kind_python", kind.python_variant()),
        ("componentize_py", COMPONENTIZE_PY),
        ("lang", &lang.to_string()),
        ("engine", engine),
        ("budget_ms", budget_ms),
        ("instances_line", instances_line),
        ("limits", limits),
        ("build_cmd", build_cmd),
        ("source", source),
    ];
    let text = |path: &'static str, template: &str| File {
        path,
        contents: render(template, &vars),
        executable: false,
    };
    let script = |path: &'static str, template: &str| File {
        path,
        contents: render(template, &vars),
        executable: true,
    };
    let mut files = vec![
        File {
            path: "wit/tier.wit",
            contents: WIT.to_string(),
            executable: false,
        },
        text("samples.jsonl", SAMPLES),
        text("expected.txt", EXPECTED),
        text("cascade.toml", CASCADE),
        script("test.sh", TEST_SH),
        text("README.md", README),
    ];
    match lang {
        Lang::Rust => files.extend([
            text("Cargo.toml", RUST_CARGO),
            text("src/lib.rs", RUST_LIB),
            script("build.sh", RUST_BUILD),
            text("sdk/Cargo.toml", RUST_SDK_CARGO),
            File {
                path: "sdk/src/lib.rs",
                // In this repository the SDK sits in plugins/sdk, two levels below wit/.
                contents: RUST_SDK_LIB.replace("\"../../wit\"", "\"../wit\""),
                executable: false,
            },
            text(".gitignore", "/target\n/{{name}}.wasm\n"),
        ]),
        Lang::Python => files.extend([
            text("app.py", PYTHON_APP),
            script("build.sh", PYTHON_BUILD),
            File {
                path: "tierhost_tier.py",
                contents: PYTHON_SDK.to_string(),
                executable: false,
            },
            text(
                ".gitignore",
                "/.venv\n/__pycache__\n/.tierhost-cache\n/{{name}}.wasm\n",
            ),
        ]),
        Lang::Js => files.extend([
            text("app.js", JS_APP),
            script("build.sh", JS_BUILD),
            text("package.json", JS_PACKAGE),
            File {
                path: "tierhost_tier.js",
                contents: JS_SDK.to_string(),
                executable: false,
            },
            text(
                ".gitignore",
                "/node_modules\n/.tierhost-cache\n/{{name}}.wasm\n",
            ),
        ]),
    }
    files
}

/// Writes a new tier project into `dir` (default: `./NAME`); returns the directory.
pub(crate) fn new_tier(name: &str, lang: Lang, kind: Kind, dir: Option<&Path>) -> Result<PathBuf> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        let mut entries = std::fs::read_dir(&dir)
            .with_context(|| format!("{} exists and is not a readable directory", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} exists and is not empty: `tierhost new` never writes over files",
                dir.display()
            );
        }
    }
    for file in files(name, lang, kind) {
        let path = dir.join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "card-rules", "rules2", "x-1-y"] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            "Card",
            "-a",
            "a-",
            "a--b",
            "1a",
            "a_b",
            "a b",
            "safe-default",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(type_name("card-rules-2"), "CardRules2");
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for file in files("card-rules", lang, Kind::Rules) {
                // Copied verbatim (they hold braces of their own).
                if file.path == "wit/tier.wit"
                    || file.path.starts_with("sdk/")
                    || file.path.starts_with("tierhost_tier.")
                {
                    continue;
                }
                assert!(
                    !file.contents.contains("{{"),
                    "{lang} {}: unfilled placeholder",
                    file.path
                );
            }
        }
    }
}
