//! Short-description templates: literal text with `{placeholder}`s, parsed when the config loads and
//! rendered for every record.

use crate::route::Decision;

/// A short-description template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    Placeholder(Placeholder),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    AlertType,
    TypeLabel,
    Severity,
    SeverityLabel,
    Employee,
    Description,
    RiskScore,
    RuleName,
    RecordLabel,
    OccurredAt,
}

impl Placeholder {
    pub const ALL: [Placeholder; 10] = [
        Placeholder::AlertType,
        Placeholder::TypeLabel,
        Placeholder::Severity,
        Placeholder::SeverityLabel,
        Placeholder::Employee,
        Placeholder::Description,
        Placeholder::RiskScore,
        Placeholder::RuleName,
        Placeholder::RecordLabel,
        Placeholder::OccurredAt,
    ];

    /// The name written between braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::AlertType => "alert_type",
            Placeholder::TypeLabel => "type_label",
            Placeholder::Severity => "severity",
            Placeholder::SeverityLabel => "severity_label",
            Placeholder::Employee => "employee",
            Placeholder::Description => "description",
            Placeholder::RiskScore => "risk_score",
            Placeholder::RuleName => "rule_name",
            Placeholder::RecordLabel => "record_label",
            Placeholder::OccurredAt => "occurred_at",
        }
    }

    fn parse(name: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed '{{' in template {template:?}")]
    Unclosed { template: String },
    #[error(
        "unknown placeholder {{{name}}} in template {template:?}; known: {}",
        known_placeholders()
    )]
    UnknownPlaceholder { name: String, template: String },
}

fn known_placeholders() -> String {
    Placeholder::ALL.map(|p| format!("{{{}}}", p.name())).join(" ")
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| TemplateError::Unclosed {
                template: s.to_string(),
            })?;
            let name = &after[..close];
            let p = Placeholder::parse(name).ok_or_else(|| TemplateError::UnknownPlaceholder {
                name: name.to_string(),
                template: s.to_string(),
            })?;
            parts.push(TemplatePart::Placeholder(p));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text for decision `d`; `{rule_name}` is the custom alert's own rule name when it has one, else
    /// the routing rule's.
    pub(crate) fn render(&self, d: &Decision, custom_rule_name: Option<&str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(s) => out.push_str(s),
                TemplatePart::Placeholder(p) => match p {
                    Placeholder::AlertType => out.push_str(d.alert_type.as_str()),
                    Placeholder::TypeLabel => out.push_str(d.alert_type.label()),
                    Placeholder::Severity => out.push_str(d.severity.as_str()),
                    Placeholder::SeverityLabel => out.push_str(d.severity.label()),
                    Placeholder::Employee => out.push_str(&d.employee_ref),
                    Placeholder::Description => out.push_str(&crate::fields::one_line(&d.summary.description)),
                    Placeholder::RiskScore => out.push_str(&d.summary.risk_score.to_string()),
                    Placeholder::RuleName => out.push_str(custom_rule_name.unwrap_or(&d.rule)),
                    Placeholder::RecordLabel => out.push_str(d.record_type.label()),
                    Placeholder::OccurredAt => out.push_str(&d.summary.occurred_at),
                },
            }
        }
        out
    }
}
