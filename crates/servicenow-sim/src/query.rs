//! Encoded queries (`sysparm_query`) as a real instance reads them: `^` AND, `^OR` OR, `^NQ` new OR'd
//! group, `ORDERBY`/`ORDERBYDESC`, and the operators `=`, `!=`, `LIKE`, `NOT LIKE`, `STARTSWITH`,
//! `ENDSWITH`, `IN`, `NOT IN`, `ISEMPTY`, `ISNOTEMPTY`, `<`, `<=`, `>`, `>=`.
//! Terms that do not parse, and (see [`EncodedQuery::drop_terms`]) terms naming a field the table lacks, are
//! dropped silently (so a broken query can return MORE rows), unless `invalid_query_returns_no_rows` is set.

use std::cmp::Ordering;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Operator {
    Equals(String),
    NotEquals(String),
    Like(String),
    NotLike(String),
    StartsWith(String),
    EndsWith(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    IsEmpty,
    IsNotEmpty,
    Less(String),
    LessOrEqual(String),
    Greater(String),
    GreaterOrEqual(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: String,
    pub op: Operator,
}

/// A parsed query: OR of groups; each group is an AND of clauses; each clause an OR of conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedQuery {
    pub groups: Vec<Vec<Vec<Condition>>>,
    pub order_by: Vec<(String, bool)>,
    /// Number of terms dropped because they did not parse.
    pub dropped_terms: usize,
}

fn valid_field(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// Operators in the order they must be tried (longer / more specific first).
const OPERATORS: [&str; 14] = [
    "ISNOTEMPTY",
    "ISEMPTY",
    "NOT LIKE",
    "NOT IN",
    "STARTSWITH",
    "ENDSWITH",
    "LIKE",
    "IN",
    "!=",
    "<=",
    ">=",
    "=",
    "<",
    ">",
];

fn parse_condition(term: &str) -> Option<Condition> {
    // field name is the longest prefix of field characters; the operator follows immediately.
    let end = term
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(term.len());
    // Word operators (LIKE, IN, ISEMPTY...) are glued to the field name: try every split point.
    // Shortest field first: field names are lower case, operator keywords upper case.
    for split in 1..=end {
        let (field, rest) = term.split_at(split);
        if !valid_field(field) {
            continue;
        }
        for op in OPERATORS {
            if let Some(value) = rest.strip_prefix(op) {
                let is_word = op.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
                if !is_word && split != end {
                    continue;
                }
                let v = value.to_string();
                let list = || v.split(',').map(|s| s.to_string()).collect::<Vec<_>>();
                let parsed = match op {
                    "ISEMPTY" | "ISNOTEMPTY" if !value.is_empty() => continue,
                    "ISEMPTY" => Operator::IsEmpty,
                    "ISNOTEMPTY" => Operator::IsNotEmpty,
                    "NOT LIKE" => Operator::NotLike(v),
                    "NOT IN" => Operator::NotIn(list()),
                    "STARTSWITH" => Operator::StartsWith(v),
                    "ENDSWITH" => Operator::EndsWith(v),
                    "LIKE" => Operator::Like(v),
                    "IN" => Operator::In(list()),
                    "!=" => Operator::NotEquals(v),
                    "<=" => Operator::LessOrEqual(v),
                    ">=" => Operator::GreaterOrEqual(v),
                    "=" => Operator::Equals(v),
                    "<" => Operator::Less(v),
                    ">" => Operator::Greater(v),
                    _ => continue,
                };
                return Some(Condition {
                    field: field.to_string(),
                    op: parsed,
                });
            }
        }
    }
    None
}

impl EncodedQuery {
    pub fn parse(text: &str) -> EncodedQuery {
        let mut query = EncodedQuery::default();
        for group_text in text.split("^NQ") {
            let mut group: Vec<Vec<Condition>> = Vec::new();
            for term in group_text.split('^') {
                if term.is_empty() {
                    continue;
                }
                if let Some(field) = term.strip_prefix("ORDERBYDESC") {
                    if valid_field(field) {
                        query.order_by.push((field.to_string(), true));
                    } else {
                        query.dropped_terms += 1;
                    }
                    continue;
                }
                if let Some(field) = term.strip_prefix("ORDERBY") {
                    if valid_field(field) {
                        query.order_by.push((field.to_string(), false));
                    } else {
                        query.dropped_terms += 1;
                    }
                    continue;
                }
                // "^OR" splits as "OR..." here: OR'd with the previous clause.
                if let Some(rest) = term.strip_prefix("OR")
                    && !group.is_empty()
                    && let Some(cond) = parse_condition(rest)
                {
                    group.last_mut().expect("non-empty").push(cond);
                    continue;
                }
                match parse_condition(term) {
                    Some(cond) => group.push(vec![cond]),
                    None => query.dropped_terms += 1,
                }
            }
            query.groups.push(group);
        }
        query
    }

    /// Drop the conditions and orderings whose field is invalid (e.g. a field the table lacks), counting
    /// each as a dropped term: the instance runs the rest of the query.
    pub fn drop_terms(&mut self, invalid: impl Fn(&str) -> bool) {
        let mut dropped = 0;
        for group in self.groups.iter_mut() {
            for clause in group.iter_mut() {
                let before = clause.len();
                clause.retain(|c| !invalid(&c.field));
                dropped += before - clause.len();
            }
            group.retain(|clause| !clause.is_empty());
        }
        let before = self.order_by.len();
        self.order_by.retain(|(f, _)| !invalid(f));
        dropped += before - self.order_by.len();
        self.dropped_terms += dropped;
    }

    /// Does the record (field → string value) match? An empty query matches everything.
    pub fn matches(&self, record: &BTreeMap<String, String>) -> bool {
        if self.groups.iter().all(|g| g.is_empty()) {
            return true;
        }
        self.groups
            .iter()
            .any(|group| group.iter().all(|clause| clause.iter().any(|c| c.matches(record))))
    }

    pub fn compare(&self, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Ordering {
        for (field, desc) in &self.order_by {
            let x = a.get(field).map(String::as_str).unwrap_or("");
            let y = b.get(field).map(String::as_str).unwrap_or("");
            let ord = compare_values(x, y);
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}

fn compare_values(x: &str, y: &str) -> Ordering {
    match (x.parse::<f64>(), y.parse::<f64>()) {
        (Ok(a), Ok(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        _ => x.cmp(y),
    }
}

impl Condition {
    pub fn matches(&self, record: &BTreeMap<String, String>) -> bool {
        let value = record.get(&self.field).map(String::as_str).unwrap_or("");
        let lower = || value.to_lowercase();
        match &self.op {
            Operator::Equals(v) => value == v,
            Operator::NotEquals(v) => value != v,
            Operator::Like(v) => lower().contains(&v.to_lowercase()),
            Operator::NotLike(v) => !lower().contains(&v.to_lowercase()),
            Operator::StartsWith(v) => lower().starts_with(&v.to_lowercase()),
            Operator::EndsWith(v) => lower().ends_with(&v.to_lowercase()),
            Operator::In(list) => list.iter().any(|v| v == value),
            Operator::NotIn(list) => !list.iter().any(|v| v == value),
            Operator::IsEmpty => value.is_empty(),
            Operator::IsNotEmpty => !value.is_empty(),
            Operator::Less(v) => compare_values(value, v) == Ordering::Less,
            Operator::LessOrEqual(v) => compare_values(value, v) != Ordering::Greater,
            Operator::Greater(v) => compare_values(value, v) == Ordering::Greater,
            Operator::GreaterOrEqual(v) => compare_values(value, v) != Ordering::Less,
        }
    }
}

#[cfg(test)]
mod tests;
