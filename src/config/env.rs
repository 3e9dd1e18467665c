//! Secret references: a whole value of `env:NAME` or `${NAME}` is replaced by that environment
//! variable, so keys need not live in the file. Only the variable *name* may ever appear in a
//! message, never a value (and not even a malformed name, which could be a pasted key).

/// What a secret-capable value turned out to be.
#[derive(Debug, PartialEq)]
pub(super) enum SecretSource {
    /// Written in the file.
    Literal(String),
    /// Read from this environment variable.
    Env { name: String, value: String },
}

#[derive(Debug, PartialEq)]
pub(super) enum SecretError {
    /// A well-formed reference to a variable that is not set.
    Missing(String),
    /// Looks like a reference but the name is not `[A-Za-z_][A-Za-z0-9_]*`.
    BadName,
}

impl SecretError {
    pub fn message(&self) -> String {
        match self {
            SecretError::Missing(name) => {
                format!("environment variable `{name}` is not set")
            }
            SecretError::BadName => "malformed secret reference: expected `env:NAME` or \
                 `${NAME}` with NAME made of letters, digits and `_`"
                .to_string(),
        }
    }
}

pub(super) fn resolve(
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretSource, SecretError> {
    let name = if let Some(rest) = raw.strip_prefix("env:") {
        rest
    } else if let Some(rest) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        rest
    } else {
        return Ok(SecretSource::Literal(raw.to_string()));
    };
    if !is_var_name(name) {
        return Err(SecretError::BadName);
    }
    match env(name) {
        Some(value) => Ok(SecretSource::Env {
            name: name.to_string(),
            value,
        }),
        None => Err(SecretError::Missing(name.to_string())),
    }
}

impl SecretSource {
    pub fn value(&self) -> &str {
        match self {
            SecretSource::Literal(v) => v,
            SecretSource::Env { value, .. } => value,
        }
    }

    /// A suffix for messages about the value, so the user knows where to look.
    pub fn origin_note(&self) -> String {
        match self {
            SecretSource::Literal(_) => String::new(),
            SecretSource::Env { name, .. } => {
                format!(" (value from environment variable `{name}`)")
            }
        }
    }
}

fn is_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "value-of-set".to_string())
    }

    #[test]
    fn resolves_references() {
        let cases: &[(&str, Result<SecretSource, SecretError>)] = &[
            ("plain", Ok(SecretSource::Literal("plain".into()))),
            (
                "env:SET",
                Ok(SecretSource::Env {
                    name: "SET".into(),
                    value: "value-of-set".into(),
                }),
            ),
            (
                "${SET}",
                Ok(SecretSource::Env {
                    name: "SET".into(),
                    value: "value-of-set".into(),
                }),
            ),
            ("env:UNSET", Err(SecretError::Missing("UNSET".into()))),
            ("${UNSET}", Err(SecretError::Missing("UNSET".into()))),
            ("env:", Err(SecretError::BadName)),
            ("${1X}", Err(SecretError::BadName)),
            ("${A-B}", Err(SecretError::BadName)),
            // Only whole values are references.
            (
                "Bearer ${SET}",
                Ok(SecretSource::Literal("Bearer ${SET}".into())),
            ),
            ("${SET", Ok(SecretSource::Literal("${SET".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(&resolve(input, &env), want, "input {input:?}");
        }
    }
}
