//! Which errors are in the user's input and which are runtime failures: the command line exits
//! with 2 for the first (a config, a stream file, a data file, a matrix, a report without runs)
//! and 1 for the second. Every library error type answers through [`InputError`]; the list of
//! types that can reach the command line is kept here, once.

use std::error::Error;

/// Whether an error is the user's input to fix (rather than a runtime failure).
pub trait InputError {
    /// `true` when the user's input (config, stream, data, flags) is at fault.
    fn is_input_error(&self) -> bool;
}

impl InputError for crate::validate::KeyError {
    fn is_input_error(&self) -> bool {
        true
    }
}

impl InputError for crate::experiment::ConfigError {
    fn is_input_error(&self) -> bool {
        true
    }
}

impl InputError for crate::metrics::MatrixCsvError {
    fn is_input_error(&self) -> bool {
        true
    }
}

impl InputError for crate::experiment::ConfigurationConflict {
    fn is_input_error(&self) -> bool {
        true
    }
}

impl InputError for crate::experiment::StoreError {
    fn is_input_error(&self) -> bool {
        false
    }
}

impl InputError for crate::experiment::ExecuteError {
    fn is_input_error(&self) -> bool {
        false
    }
}

/// Whether `err` (one link of an error chain) is an input error of one of the library's types.
pub fn is_input_error(err: &(dyn Error + 'static)) -> bool {
    macro_rules! ask {
        ($($t:ty),* $(,)?) => {
            $(
                if let Some(e) = err.downcast_ref::<$t>() {
                    return InputError::is_input_error(e);
                }
            )*
        };
    }
    ask!(
        crate::data::DataError,
        crate::streams::StreamError,
        crate::experiment::ConfigError,
        crate::validate::KeyError,
        crate::metrics::MatrixCsvError,
        crate::report::ReportError,
        crate::experiment::ConfigurationConflict,
        crate::experiment::StoreError,
        crate::experiment::ExecuteError,
    );
    false
}
