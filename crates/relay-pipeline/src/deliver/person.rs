//! The employee lookup: a record's person resolved to a `sys_user`, cached for the config's TTL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use servicenow_client::{Outcome, ServiceNowClient};

use super::Delivery;

/// (sys_user field, value) → the user's sys_id (or none), and when that answer expires.
pub(super) type PersonCache = HashMap<(String, String), (Option<String>, Instant)>;

/// What became of an employee lookup.
enum Person {
    Found(String),
    Missing,
    Unavailable,
}

impl Delivery {
    /// `fields` with the employee's `sys_user` in the person's fields, or a note in its note field when
    /// there is none. Answers are cached for the config's TTL; a miss is not an error. A lookup that fails
    /// now is retryable only where the table requires the person (`required`): elsewhere the record goes
    /// with a note rather than waiting.
    pub async fn with_person(
        &self,
        client: &ServiceNowClient,
        p: &relay_core::PersonLookup,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Outcome> {
        let field = p.match_by.field();
        let key = (field.to_string(), p.value.clone());
        let now = Instant::now();
        let cached = self
            .people
            .lock()
            .ok()
            .and_then(|m| m.get(&key).filter(|(_, until)| *until > now).map(|(v, _)| v.clone()));
        let person = match cached {
            Some(Some(id)) => Person::Found(id),
            Some(None) => Person::Missing,
            None => match client.find_user(field, &p.value).await {
                Ok(found) => {
                    if let Ok(mut m) = self.people.lock() {
                        m.insert(key, (found.clone(), now + Duration::from_secs(p.cache_ttl_seconds)));
                    }
                    found.map_or(Person::Missing, Person::Found)
                }
                // a lookup that fails now does not hold the record back
                Err(_) => Person::Unavailable,
            },
        };
        let mut fields = fields.clone();
        let note = match person {
            Person::Found(id) => {
                for f in &p.fields {
                    fields.insert(f.clone(), serde_json::Value::String(id.clone()));
                }
                return Ok(fields);
            }
            Person::Missing => format!(
                "no sys_user has {field} = the employee's; {} left empty",
                p.fields.join(", ")
            ),
            Person::Unavailable if p.required => {
                return Err(Outcome::Retryable {
                    retry_after: None,
                    reason: format!(
                        "the employee could not be looked up in sys_user now, and the table requires {}",
                        p.fields.join(", ")
                    ),
                });
            }
            Person::Unavailable => format!(
                "the employee could not be looked up in sys_user now; {} left empty",
                p.fields.join(", ")
            ),
        };
        if let Some(serde_json::Value::String(text)) = fields.get_mut(&p.note_field) {
            text.push_str(&format!("\n\nPerson: {note}"));
        }
        Ok(fields)
    }
}
