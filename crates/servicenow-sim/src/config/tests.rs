use super::*;

#[test]
fn children_inherit_the_task_dictionary() {
    let tables = SimConfig::default().resolved_tables().unwrap();
    let t = |n: &str| tables.iter().find(|t| t.name == n).unwrap();
    let incident = t("incident");
    assert!(incident.has_field("correlation_id") && incident.has_field("caller_id"));
    assert_eq!(incident.max_lengths["description"], 4000);
    assert_eq!(incident.references["assignment_group"], "sys_user_group");
    assert_eq!(incident.choices["state"]["1"], "New", "the child's choices win");
    assert!(incident.extends.is_none());
    let sir = t("sn_si_incident");
    assert_eq!(sir.defaults["state"], "10", "the child's defaults win");
    assert_eq!(sir.defaults["impact"], "3", "the parent's defaults fill in");
    let pex = t("sn_compliance_policy_exception");
    assert!(!pex.has_field("correlation_id") && pex.has_field("short_description"));
    assert!(!pex.max_lengths.contains_key("correlation_id"));
    let risk = t("sn_risk_risk");
    assert!(risk.has_field("name") && risk.has_field("owning_group") && !risk.has_field("short_description"));
    assert!(
        risk.has_field("sys_id") && risk.has_field("sys_created_on.date"),
        "system fields, dot-walk"
    );
    assert!(!t("sn_ti_observable").has_field("number"), "no number without a prefix");
    assert!(t("em_alert").has_field("anything"), "no field list: every field");
}
