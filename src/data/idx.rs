//! The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! An IDX file is a 4-byte magic number (two zero bytes, an element-type code, the number of
//! dimensions), one big-endian `u32` per dimension, then the elements in row-major order. Only
//! unsigned bytes (type `0x08`) occur in the MNIST family, so only those are accepted.

use std::io::Read;
use std::path::Path;

use super::DataError;

/// The IDX element-type code for unsigned bytes.
const UBYTE: u8 = 0x08;
/// The first two bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The elements, row-major; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// The largest file of the MNIST family is 47,040,016 bytes (60,000 images of 28 × 28); no
/// data file, raw or decompressed, may be larger than this.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Returns the content of `bytes`, gunzipped if it starts with the gzip magic number. A stream
/// that inflates past [`MAX_FILE_BYTES`] (a gzip bomb, a wrong file) is refused without being
/// inflated further.
pub fn decompress(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    let too_large = || DataError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "holds more than {} MiB: not a file of an MNIST-family dataset",
            MAX_FILE_BYTES >> 20
        ),
    };
    if !bytes.starts_with(&GZIP_MAGIC) {
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large());
        }
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity((bytes.len() * 5).min(MAX_FILE_BYTES as usize));
    flate2::read::GzDecoder::new(bytes.as_slice())
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("the gzip stream is damaged ({e})"),
        })?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(out)
}

/// Parses the decompressed content of an IDX file. `path` only names the file in errors.
pub fn parse(content: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if content.len() < 4 {
        return Err(corrupt(format!(
            "{} bytes is too short for an IDX header",
            content.len()
        )));
    }
    if content[0] != 0 || content[1] != 0 {
        return Err(corrupt(format!(
            "bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
            content[0], content[1], content[2], content[3]
        )));
    }
    if content[2] != UBYTE {
        return Err(corrupt(format!(
            "element type 0x{:02x} is not supported (expected 0x08, unsigned bytes)",
            content[2]
        )));
    }
    let ndims = content[3] as usize;
    if ndims == 0 {
        return Err(corrupt("the header declares zero dimensions".into()));
    }
    let header_len = 4 + 4 * ndims;
    if content.len() < header_len {
        return Err(corrupt(format!(
            "truncated header: {ndims} dimensions need {header_len} bytes, the file has {}",
            content.len()
        )));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let b = &content[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| corrupt(format!("dimensions {dims:?} overflow")))?;
    let actual = content.len() - header_len;
    if actual != expected {
        let what = if actual < expected {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(corrupt(format!(
            "{what}: dimensions {dims:?} need {expected} data bytes, found {actual}"
        )));
    }
    Ok(IdxArray {
        dims,
        data: content[header_len..].to_vec(),
    })
}

/// Encodes an array as IDX (used by tests and tools that write small datasets).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UBYTE, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn p() -> &'static Path {
        Path::new("x-idx3-ubyte")
    }

    #[test]
    fn parses_a_good_file() {
        let bytes = encode(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = parse(&bytes, p()).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 12);
    }

    #[test]
    fn rejects_truncated_and_padded_files() {
        let bytes = encode(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let e = parse(&bytes[..bytes.len() - 1], p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated") && e.contains("x-idx3-ubyte"), "{e}");
        let mut longer = bytes.clone();
        longer.push(0);
        let e = parse(&longer, p()).unwrap_err().to_string();
        assert!(e.contains("trailing"), "{e}");
        let e = parse(&bytes[..6], p()).unwrap_err().to_string();
        assert!(e.contains("truncated header"), "{e}");
    }

    #[test]
    fn rejects_wrong_magic_and_type() {
        let mut bytes = encode(&[1], &[1]);
        bytes[0] = 7;
        assert!(parse(&bytes, p())
            .unwrap_err()
            .to_string()
            .contains("bad magic"));
        let mut bytes = encode(&[1], &[1]);
        bytes[2] = 0x0D; // float
        assert!(parse(&bytes, p())
            .unwrap_err()
            .to_string()
            .contains("element type 0x0d"));
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_inflating_it_all() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_FILE_BYTES >> 20) + 1 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "a small file");
        let e = decompress(bomb, p()).unwrap_err().to_string();
        assert!(e.contains("more than 64 MiB"), "{e}");
    }

    #[test]
    fn gunzips_and_reports_damaged_gzip() {
        let raw = encode(&[3], &[9, 8, 7]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(gz.clone(), p()).unwrap(), raw);
        assert_eq!(decompress(raw.clone(), p()).unwrap(), raw);
        let cut = gz[..gz.len() - 6].to_vec();
        let e = decompress(cut, p()).unwrap_err().to_string();
        assert!(e.contains("gzip") && e.contains("x-idx3-ubyte"), "{e}");
    }
}
