use std::path::PathBuf;

use weir_pipeline::config::{resolve_graph, ConfigError, ConfigErrors};

use super::{load, print_errors};

/// Validates each file (or all merged), printing every error; non-zero exit on any.
pub fn validate(files: &[PathBuf], merge: bool, check_environment: bool) -> u8 {
    let groups: Vec<Vec<PathBuf>> = if merge {
        vec![files.to_vec()]
    } else {
        files.iter().map(|f| vec![f.clone()]).collect()
    };
    let mut all = ConfigErrors::default();
    for g in &groups {
        let names: Vec<String> = g.iter().map(|p| p.display().to_string()).collect();
        match load(g) {
            Ok(config) => {
                match resolve_graph(&config, check_environment).and_then(
                    |g| match check_environment.then(|| crate::api::check(&config.api)) {
                        Some(Err(e)) => Err(ConfigErrors(vec![ConfigError::new(e)])),
                        _ => Ok(g),
                    },
                ) {
                    Ok(_) => println!("ok: {}", names.join(" + ")),
                    Err(mut e) => {
                        for err in e.0.iter_mut() {
                            if err.location.is_none() {
                                err.message = format!("{} ({})", err.message, names.join(" + "));
                            }
                        }
                        all.0.append(&mut e.0)
                    }
                }
            }
            Err(mut e) => all.0.append(&mut e.0),
        }
    }
    if all.0.is_empty() {
        crate::exit::OK
    } else {
        print_errors(&all);
        crate::exit::CONFIG
    }
}
