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

#[cfg(test)]
mod fuzz {
    use weir_pipeline::config::{load_str, resolve_graph};

    /// Every configuration shipped in the repository (the quickstart, the examples, the
    /// Kubernetes agent), mutated, loaded and resolved as `weir validate` does: errors, never
    /// a panic; and every error says where (a file position) or which component.
    #[test]
    fn fuzz_config() {
        let root = weir_testing::repo_root();
        let mut seeds = vec![crate::QUICKSTART.as_bytes().to_vec()];
        for dir in ["config/examples", "config/kubernetes"] {
            let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            seeds.extend(files.iter().map(|p| std::fs::read(p).unwrap()));
        }
        assert!(seeds.len() > 5, "the example configurations were not found");
        let registry = crate::registry::registry();
        let env = |name: &str| match name {
            "HOSTNAME" | "NODE_NAME" | "K8S_NODE_NAME" => Some("node-1".to_string()),
            _ => None,
        };
        // Inputs stay near the size of real configs: VRL compiles a long chain of operators
        // in time that grows faster than its length (a 3000-term chain: two minutes).
        weir_testing::fuzz::Fuzz::new("config")
            .seeds(seeds)
            .max_len(4096)
            .dict([
                "[sources.",
                "[transforms.",
                "[sinks.",
                "type = ",
                "inputs = [",
                "\"",
                "]",
                "=",
                "${",
                "}",
                "\n",
                "[[",
                "{",
                "1s",
                "-1",
                "1e999",
                "\"*\"",
                "true",
                "[api]",
                "data_dir = ",
                "on_failure = ",
                "[sinks.x.buffer]",
                "max_events = 0",
            ])
            .run(|input| {
                let text = String::from_utf8_lossy(input);
                let errors = match load_str("fuzz.toml", &text, &registry, &env) {
                    Ok(config) => match resolve_graph(&config, false) {
                        Ok(_) => return,
                        Err(e) => e,
                    },
                    Err(e) => e,
                };
                assert!(!errors.0.is_empty(), "a failure without an error");
                for e in &errors.0 {
                    let _ = e.to_string();
                }
            });
    }
}
