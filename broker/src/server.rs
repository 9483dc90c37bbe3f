//! Start-up and shutdown of the shards.

use crate::config::Config;

pub fn run(config: Config) -> Result<(), String> {
    Err(format!("not implemented yet: would listen on {}", config.listen))
}
