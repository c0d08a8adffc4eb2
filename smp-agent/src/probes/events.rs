//! Decoding of ring-buffer records (pure: bytes in, typed events out).

use smp_common::{
    event::{EventHeader, EventKind, ProcessExit},
    ABI_VERSION,
};

/// An event from the kernel programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeEvent {
    /// A tracked process exited.
    ProcessExit { tgid: u32, ts_ns: u64 },
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need} its kind needs")]
    TooShort { got: usize, need: usize },
    #[error("record written by ABI version {got}, this agent speaks {ABI_VERSION}")]
    Abi { got: u32 },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            got: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked; T is a #[repr(C)] plain-old-data type from smp-common;
    // read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<ProbeEvent, DecodeError> {
    let header: EventHeader = read(bytes)?;
    if header.abi != ABI_VERSION {
        return Err(DecodeError::Abi { got: header.abi });
    }
    match EventKind::from_u32(header.kind) {
        Some(EventKind::ProcessExit) => {
            let e: ProcessExit = read(bytes)?;
            Ok(ProbeEvent::ProcessExit {
                tgid: e.tgid,
                ts_ns: e.header.ts_ns,
            })
        }
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is plain-old-data without padding (sizes asserted in smp-common).
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn round_trips_process_exit() {
        let e = ProcessExit {
            header: EventHeader {
                kind: EventKind::ProcessExit as u32,
                abi: ABI_VERSION,
                ts_ns: 42,
            },
            tgid: 1234,
            _pad: 0,
        };
        assert_eq!(
            decode(&bytes_of(&e)),
            Ok(ProbeEvent::ProcessExit {
                tgid: 1234,
                ts_ns: 42
            })
        );
    }

    #[test]
    fn rejects_short_foreign_and_unknown_records() {
        let mut e = ProcessExit::default();
        e.header.kind = EventKind::ProcessExit as u32;
        e.header.abi = ABI_VERSION;
        let b = bytes_of(&e);
        assert_eq!(
            decode(&b[..20]),
            Err(DecodeError::TooShort { got: 20, need: 24 })
        );
        assert_eq!(
            decode(&b[..4]),
            Err(DecodeError::TooShort { got: 4, need: 16 })
        );
        e.header.abi = ABI_VERSION + 1;
        assert_eq!(
            decode(&bytes_of(&e)),
            Err(DecodeError::Abi {
                got: ABI_VERSION + 1
            })
        );
        e.header.abi = ABI_VERSION;
        e.header.kind = 999;
        assert_eq!(decode(&bytes_of(&e)), Err(DecodeError::UnknownKind(999)));
    }
}
