//! A hostile tier for the tests: its `describe` reports a name and version with terminal
//! control characters (ESC, CR, a newline), which would redraw a `tierhost check` line or forge
//! a log line if the host printed them raw. The host must refuse it at load.
use tierhost_sdk::{Description, Guest, Outcome, Request, TierError, TierKind};

struct Forged;

impl Guest for Forged {
    fn describe() -> Description {
        Description {
            name: "evil\u{1b}[2K\rrules".into(),
            version: "1.0\nWARN forged log line".into(),
            kind: TierKind::Rules,
        }
    }

    fn predict(_req: Request) -> Result<Outcome, TierError> {
        Ok(Outcome::Abstain("never loaded".into()))
    }
}

tierhost_sdk::export_guest!(Forged);
