//! Parsing and matching of encoded queries.

use super::*;

fn rec(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn parses_operators() {
    let q = EncodedQuery::parse(
        "correlation_id=abc^stateIN1,2^short_descriptionLIKEdisk^numberSTARTSWITHINC^descriptionISEMPTY^impact!=1",
    );
    assert_eq!(q.dropped_terms, 0);
    let g = &q.groups[0];
    assert_eq!(g[0][0].op, Operator::Equals("abc".into()));
    assert_eq!(g[1][0].op, Operator::In(vec!["1".into(), "2".into()]));
    assert_eq!(g[2][0].op, Operator::Like("disk".into()));
    assert_eq!(
        g[3][0],
        Condition {
            field: "number".into(),
            op: Operator::StartsWith("INC".into())
        }
    );
    assert_eq!(g[4][0].op, Operator::IsEmpty);
    assert_eq!(g[5][0].op, Operator::NotEquals("1".into()));
}

#[test]
fn or_nq_and_order() {
    let q = EncodedQuery::parse("a=1^ORa=2^b=x^NQc=3^ORDERBYDESCnumber");
    assert_eq!(q.groups.len(), 2);
    assert_eq!(q.groups[0][0].len(), 2);
    assert_eq!(q.order_by, vec![("number".to_string(), true)]);
    assert!(q.matches(&rec(&[("a", "2"), ("b", "x")])));
    assert!(!q.matches(&rec(&[("a", "2"), ("b", "y")])));
    assert!(q.matches(&rec(&[("c", "3")])));
}

#[test]
fn invalid_terms_are_dropped_so_more_rows_match() {
    let q = EncodedQuery::parse("correlation_id=abc^%%%garbage");
    assert_eq!(q.dropped_terms, 1);
    let q = EncodedQuery::parse("???");
    assert!(q.matches(&rec(&[("a", "1")])));
}

#[test]
fn injection_in_a_value_widens_the_query() {
    // the "value" abc^ORnumberISNOTEMPTY turns into a second condition
    let q = EncodedQuery::parse("correlation_id=abc^ORnumberISNOTEMPTY");
    assert!(q.matches(&rec(&[("correlation_id", "other"), ("number", "INC0010001")])));
}

#[test]
fn numeric_ordering() {
    let q = EncodedQuery::parse("ORDERBYn");
    assert_eq!(q.compare(&rec(&[("n", "9")]), &rec(&[("n", "10")])), Ordering::Less);
}

#[test]
fn terms_on_fields_the_table_lacks_are_dropped() {
    let mut q = EncodedQuery::parse("correlation_id=abc^ORname=x^state=1^NQcorrelation_id=z^ORDERBYcorrelation_id");
    q.drop_terms(|f| f == "correlation_id");
    assert_eq!(q.dropped_terms, 3);
    assert!(q.order_by.is_empty());
    // first group: name=x ^ state=1; second group: empty, so it matches every record
    assert_eq!(q.groups[0].len(), 2);
    assert!(q.groups[1].is_empty());
    assert!(q.matches(&rec(&[("name", "other")])));
    let mut q = EncodedQuery::parse("correlation_id=abc^ORname=x");
    q.drop_terms(|f| f == "correlation_id");
    assert!(q.matches(&rec(&[("name", "x")])));
    assert!(!q.matches(&rec(&[("name", "y")])));
}
