//! A failed or refused call, mapped to its [`FallbackReason`].
use super::*;

pub(super) fn tier_error(e: wit::TierError) -> FallbackReason {
    let (error, message) = match e {
        wit::TierError::InvalidInput(m) => ("invalid-input", m),
        wit::TierError::MissingFeature(m) => ("missing-feature", m),
        wit::TierError::BadParams(m) => ("bad-params", m),
        wit::TierError::Internal(m) => ("internal", m),
    };
    FallbackReason::TierError {
        error: error.into(),
        message: truncate(printable(message), MAX_MESSAGE_BYTES),
    }
}

/// Maps a wasmtime error from instantiation or a call to its fault kind.
pub fn classify(
    error: &wasmtime::Error,
    store: &Store<CallState>,
    limits: &TierLimits,
    deadline: Duration,
) -> FallbackReason {
    let memory = |hit: &MemoryLimitHit| FallbackReason::MemoryLimit {
        requested: hit.requested,
        limit: limits.max_memory_bytes(),
    };
    if let Some(hit) = store.data().limiter.hit.as_ref() {
        return memory(hit);
    }
    if let Some(hit) = error.downcast_ref::<MemoryLimitHit>() {
        return memory(hit);
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => FallbackReason::OutOfFuel { limit: limits.fuel },
            Trap::Interrupt => FallbackReason::Deadline {
                deadline_us: deadline.as_micros() as u64,
            },
            Trap::StackOverflow => FallbackReason::StackOverflow,
            other => FallbackReason::Trap {
                message: with_stderr(other.to_string(), store),
            },
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return FallbackReason::Shed {
            detail: "instance pool is full (engine.max_instances)".into(),
        };
    }
    let message = format!("{error:#}");
    // wasmtime's host-call data limit (its error type is private): the tier tried to hand the
    // host more than its limits allow in one transfer.
    if message.contains("fuel allocated for hostcalls has been exhausted") {
        return FallbackReason::InvalidOutput {
            detail: format!(
                "the tier passed more than {} bytes to the host in one transfer \
                 (2 x max_output_bytes + 64 KiB)",
                hostcall_fuel(limits)
            ),
        };
    }
    FallbackReason::Trap {
        message: with_stderr(message, store),
    }
}

fn with_stderr(message: String, store: &Store<CallState>) -> String {
    let stderr = store.data().stderr.contents();
    let stderr = String::from_utf8_lossy(&stderr);
    let stderr = printable(stderr.trim().to_string());
    if stderr.is_empty() {
        message
    } else {
        truncate(
            format!("{message}; guest stderr: {stderr}"),
            STDERR_CAPTURE_BYTES,
        )
    }
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
