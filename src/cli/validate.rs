//! `worker validate`.

use serde_json::json;

use super::output::print_json;
use super::{CliError, CliResult, Ctx};
use crate::config::Config;

pub fn run(ctx: &Ctx) -> CliResult {
    match Config::load(&ctx.config_dir) {
        Ok(config) => {
            if ctx.json {
                print_json(&json!([]));
            } else {
                println!(
                    "configuration OK: {} job{}",
                    config.jobs.len(),
                    if config.jobs.len() == 1 { "" } else { "s" }
                );
            }
            Ok(())
        }
        Err(diags) if ctx.json => {
            let problems: Vec<_> = diags
                .iter()
                .map(|d| json!({"file": d.file, "line": d.line, "column": d.col, "message": crate::config::secrets::mask_published(&d.message)}))
                .collect();
            print_json(&json!(problems));
            Err(CliError::Exit(2))
        }
        Err(diags) => Err(CliError::Config(diags)),
    }
}
