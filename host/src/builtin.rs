//! Reference tiers compiled into the binary, addressable as `builtin:<name>` plugins: `rules`,
//! `linear`, `constant`, `chaos`, `trees`, `ruleset` and `onnx` ([`names`]). They are built
//! from `plugins/` by the build script. Guests that exist only for the tests (a component of
//! another world, one that forges its description) are built beside them but not embedded.

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The embedded component called `name`, if there is one.
pub fn get(name: &str) -> Option<&'static [u8]> {
    guests::BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// Names of the embedded tiers.
pub fn names() -> impl Iterator<Item = &'static str> {
    guests::BUILTIN.iter().map(|(n, _)| *n)
}
