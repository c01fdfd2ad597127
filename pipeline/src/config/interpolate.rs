//! `${VAR}`, `${VAR:-default}` and `${VAR:?message}` in configuration text; `$$` is a literal `$`.

/// An interpolation problem at byte `offset` of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub offset: usize,
    pub message: String,
}

/// Replaces environment references in `text` using `lookup`. Returns the new text and every
/// error found (an unset `${VAR}` without default, a `${VAR:?msg}` whose VAR is unset or empty,
/// an unterminated or malformed reference). Replacement values may not contain newlines, so line
/// numbers of later errors stay true.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<InterpolationError>) {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut copied = 0;
    while let Some(p) = memchr::memchr(b'$', &bytes[i..]) {
        let start = i + p;
        // A `$` in a comment line is left alone: comments are not configuration.
        let line_start = memchr::memrchr(b'\n', &bytes[..start]).map_or(0, |n| n + 1);
        if text[line_start..start].trim_start().starts_with('#') {
            i = start + 1;
            continue;
        }
        out.push_str(&text[copied..start]);
        match bytes.get(start + 1) {
            Some(b'$') => {
                out.push('$');
                i = start + 2;
                copied = i;
            }
            Some(b'{') => {
                let Some(end_rel) = memchr::memchr2(b'}', b'\n', &bytes[start + 2..]) else {
                    errors.push(InterpolationError {
                        offset: start,
                        message: "unterminated environment reference `${`: add the closing `}`"
                            .into(),
                    });
                    i = start + 2;
                    copied = start;
                    continue;
                };
                let end = start + 2 + end_rel;
                if bytes[end] == b'\n' {
                    errors.push(InterpolationError {
                        offset: start,
                        message: "unterminated environment reference `${`: add the closing `}`"
                            .into(),
                    });
                    i = end;
                    copied = end;
                    continue;
                }
                let inner = &text[start + 2..end];
                match resolve(inner, lookup) {
                    Ok(v) => {
                        if v.contains('\n') {
                            errors.push(InterpolationError {
                                offset: start,
                                message: format!(
                                    "the value of `${{{inner}}}` contains a newline, which is not allowed"
                                ),
                            });
                        } else {
                            out.push_str(&v);
                        }
                    }
                    Err(m) => errors.push(InterpolationError {
                        offset: start,
                        message: m,
                    }),
                }
                i = end + 1;
                copied = i;
            }
            _ => {
                out.push('$');
                i = start + 1;
                copied = i;
            }
        }
    }
    out.push_str(&text[copied..]);
    (out, errors)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

fn resolve(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, op, arg) = if let Some(p) = inner.find(":-") {
        (&inner[..p], Some(":-"), &inner[p + 2..])
    } else if let Some(p) = inner.find(":?") {
        (&inner[..p], Some(":?"), &inner[p + 2..])
    } else if let Some(p) = inner.find('-') {
        (&inner[..p], Some("-"), &inner[p + 1..])
    } else {
        (inner, None, "")
    };
    if !valid_name(name) {
        return Err(format!(
            "invalid environment reference `${{{inner}}}`: a variable name is letters, digits and `_`"
        ));
    }
    let value = lookup(name);
    match op {
        None => value.ok_or_else(|| {
            format!(
                "environment variable `{name}` is not set (use `${{{name}:-default}}` for a default)"
            )
        }),
        Some(":-") => Ok(value.filter(|v| !v.is_empty()).unwrap_or_else(|| arg.to_string())),
        Some("-") => Ok(value.unwrap_or_else(|| arg.to_string())),
        _ => match value.filter(|v| !v.is_empty()) {
            Some(v) => Ok(v),
            None => Err(format!("environment variable `{name}` is required: {arg}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_defaults_and_escapes() {
        let (out, errs) = interpolate(
            "a=${HOST} b=${NOPE:-x} c=${EMPTY:-y} d=${EMPTY-z} e=$$HOST f=$5",
            &env,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(out, "a=example b=x c=y d= e=$HOST f=$5");
    }

    #[test]
    fn comment_lines_are_not_interpolated() {
        let (out, errs) = interpolate("# uses ${UNSET}\na = \"${HOST}\" # ${X}\n", &env);
        assert!(
            errs.len() == 1 && errs[0].message.contains("`X`"),
            "{errs:?}"
        );
        assert!(out.starts_with("# uses ${UNSET}\na = \"example\""), "{out}");
    }

    #[test]
    fn reports_every_problem_with_offsets() {
        let text = "x=${NOPE}\ny=${EMPTY:?set it}\nz=${bad name}\nw=${OPEN\n";
        let (_, errs) = interpolate(text, &env);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(errs[0].offset, 2);
        assert!(errs[0].message.contains("`NOPE` is not set"));
        assert!(errs[1].message.contains("required: set it"));
        assert!(errs[2].message.contains("invalid environment reference"));
        assert!(errs[3].message.contains("unterminated"));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Interpolation never panics, and keeps the text's line count (later errors' line
    /// numbers depend on it) whatever the references and the values.
    #[test]
    fn fuzz_interpolation() {
        let lookup = |name: &str| match name {
            "HOST" => Some("node-1".to_string()),
            "EMPTY" => Some(String::new()),
            "BRACE" => Some("}${HOST}".to_string()),
            "NL" => Some("a\nb".to_string()),
            _ => None,
        };
        weir_testing::fuzz::Fuzz::new("interpolation")
            .seed("a = \"${HOST}\"\nb = \"$HOST/${EMPTY:-x}\"\n# ${NOT_SET}\nc = \"$$HOST\"\n")
            .seed("d = \"${NL}\"\ne = \"${MISSING:?set it}\" f = \"${BRACE}\" ${A:-${B}}\n")
            .dict([
                "$", "${", "}", "$$", ":-", ":?", "-", "HOST", "NL", "#", "\n", "é",
            ])
            .run(|input| {
                let text = String::from_utf8_lossy(input);
                let (out, errors) = interpolate(&text, &lookup);
                if errors.is_empty() {
                    assert_eq!(
                        out.lines().count(),
                        text.lines().count(),
                        "{text:?} -> {out:?}"
                    );
                }
            });
    }
}
