//! The one typeface of every figure: DejaVu Sans (regular and bold), bundled in the binary so
//! that a figure looks the same on every machine (no system fonts are read). Its licence is in
//! `assets/fonts/DejaVu-LICENSE`.

/// DejaVu Sans.
pub(crate) const REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// DejaVu Sans Bold.
pub(crate) const BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");
