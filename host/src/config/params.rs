//! A tier's `params` table, flattened into the dotted names the `params` import hands out.

/// A parameter value after flattening, as handed to a tier.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Integer(i64),
    /// Float.
    Float(f64),
    /// Text (TOML strings and datetimes).
    Text(String),
}

/// Flattens a `params` table into dotted names. Arrays are not supported (a tier reads named
/// values); nested tables become `outer.inner`.
pub fn flatten_params(table: &toml::Table) -> Result<Vec<(String, ParamValue)>, String> {
    fn walk(
        prefix: &str,
        table: &toml::Table,
        out: &mut Vec<(String, ParamValue)>,
    ) -> Result<(), String> {
        for (key, value) in table {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(t) => walk(&name, t, out)?,
                toml::Value::Boolean(b) => out.push((name, ParamValue::Bool(*b))),
                toml::Value::Integer(i) => out.push((name, ParamValue::Integer(*i))),
                toml::Value::Float(x) if x.is_finite() => out.push((name, ParamValue::Float(*x))),
                toml::Value::Float(_) => return Err(format!("`{name}` must be finite")),
                toml::Value::String(s) => out.push((name, ParamValue::Text(s.clone()))),
                toml::Value::Datetime(d) => out.push((name, ParamValue::Text(d.to_string()))),
                toml::Value::Array(_) => {
                    return Err(format!(
                        "`{name}` is an array; use a table of named values (e.g. [params.{name}] a = 1.0)"
                    ));
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk("", table, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_flatten_with_dots() {
        let table: toml::Table =
            toml::from_str("bias = -1.0\n[weights]\namount = 0.5\n[weights.cat]\ncrypto = 2\n")
                .unwrap();
        let flat = flatten_params(&table).unwrap();
        assert!(flat.contains(&("weights.amount".into(), ParamValue::Float(0.5))));
        assert!(flat.contains(&("weights.cat.crypto".into(), ParamValue::Integer(2))));
        assert!(flat.contains(&("bias".into(), ParamValue::Float(-1.0))));
    }
}
