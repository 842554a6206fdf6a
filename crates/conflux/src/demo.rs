//! `conflux demo`: placeholder.

use crate::error::CliError;

pub(crate) async fn run(_json: bool) -> Result<(), CliError> {
    Err(CliError::runtime("demo: not yet"))
}
