//! `worker ui`: the address that opens the dashboard logged in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{CliError, CliResult, Ctx};

pub fn run(ctx: &Ctx) -> CliResult {
    let config = ctx.config()?;
    let Some(http) = &config.settings.http else {
        return Err(CliError::Failed(format!(
            "the HTTP server is off: set `http: {{listen: 127.0.0.1:7878}}` in {} and restart the daemon",
            crate::config::display_path(&config.dir, "scheduler.yaml")
        )));
    };
    let (data, mut store) = ctx.store()?;
    // Where the daemon listens (the configured port may be 0: any free one).
    let recorded = store
        .read(|tx| tx.meta(crate::api::ADDRESS_META))?
        .and_then(|a| a.parse::<SocketAddr>().ok());
    let addr = match recorded {
        Some(a) if http.listen.port() == 0 || a.port() == http.listen.port() => a,
        _ => http.listen,
    };
    let token = match http.tokens.first() {
        Some(t) => t.clone(),
        None => crate::api::load_or_create_token(&data).map_err(|e| {
            CliError::Failed(format!(
                "cannot read or create {}: {e}",
                crate::api::token_path(&data).display()
            ))
        })?,
    };
    let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    println!("http://{}/login?token={token}", reachable(addr));
    Ok(())
}

/// The address to browse to: a wildcard listen address is reached through loopback.
fn reachable(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        _ => a,
    }
}
