//! Which errors are in the user's input and which are runtime failures: the command line exits
//! with 2 for the first (a config, a stream file, a data file, a matrix, a report without runs)
//! and 1 for the second. Every library error type that can reach the command line says which it
//! is by implementing [`InputError`] beside its definition; this module names no type of the
//! library (so it imports none), and the command line, which calls the library, keeps the one
//! list of types it asks (`cli::exit_code`).

/// Whether an error is the user's input to fix (rather than a runtime failure).
pub trait InputError {
    /// `true` when the user's input (config, stream, data, flags) is at fault.
    fn is_input_error(&self) -> bool;
}
