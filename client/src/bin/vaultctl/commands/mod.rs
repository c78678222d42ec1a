//! One module per command group. Each parses its own subcommands (a clap
//! enum) and runs them with its own `run`; the groups that work without a
//! vault (`subject verify-receipt`, `audit verify FILE`, `policy check`,
//! `policy explain --dir`) also have a `run_offline`.

pub mod audit;
pub mod card;
pub mod keys;
pub mod lifecycle;
pub mod policy;
pub mod principal;
pub mod subject;
pub mod system;
pub mod token;
