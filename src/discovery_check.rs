//! `sluice check-config --resolve`: every name among the pools' backends
//! resolved once, as `run` would at start; one that resolves to nothing is
//! an error here (and only a warning for `run`).

use sluice_config::Config;

/// Prints each name's addresses (stdout) or why it has none (stderr);
/// true when every name resolved.
pub fn names_resolve(config: &Config) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot resolve names: {e}");
            return false;
        }
    };
    let entries = config.pools.iter().flat_map(|p| p.backends.iter().cloned());
    let results = runtime.block_on(sluice_control::discovery::resolve_all(&config.discovery, entries));
    let mut ok = true;
    for (name, result) in results {
        match result {
            Ok(found) => {
                let addrs: Vec<&str> = found.iter().map(|r| r.addr.as_str()).collect();
                println!("{name} resolves to {}", addrs.join(", "));
            }
            Err(e) => {
                ok = false;
                eprintln!("{name}: resolves to nothing ({e}); a pool gets no backend from it");
            }
        }
    }
    ok
}
