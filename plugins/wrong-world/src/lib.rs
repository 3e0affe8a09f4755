//! A component built against another world, for the host's load-failure tests.
wit_bindgen::generate!({ world: "not-a-tier", path: "wit" });

struct NotATier;

impl Guest for NotATier {
    fn predict(input: String) -> String {
        input
    }
}

export!(NotATier);
