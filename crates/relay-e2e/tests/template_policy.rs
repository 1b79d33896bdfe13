//! Deploy-side policy for `template.yaml`: parses the SAM template (short-form tags such as `!Ref`,
//! `!GetAtt`, `!Sub` are turned into their long `Fn::` forms) and fails on
//! - wildcard IAM actions (`*`, `sqs:*`, `kms:Create*`, `NotAction`) in any policy document,
//! - `*` resources except for actions that have no resource-level permissions (or inside a key policy),
//! - a function without its own role (shared, missing, external) or without permissions,
//! - a function without an explicit log group (Lambda would create one that never expires),
//! - a queue without SSE, or a (non dead-letter) queue without a redrive policy to a dead-letter queue,
//! - a dead-letter queue without an alarm (with an action) on its depth,
//! - an SQS/stream event source without `ReportBatchItemFailures`,
//! - queue access beyond what a function names (an SQS permission on a queue that is neither in its
//!   environment nor one of its event sources), or an SQS event source its role cannot consume,
//! - a log group without retention.
//!
//! Every check has a negative test that mutates a copy of the template in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Actions whose APIs have no resource-level permissions, so `Resource: "*"` is the only option.
const ACTIONS_WITHOUT_RESOURCE_LEVEL: &[&str] = &[
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "cloudwatch:PutMetricData",
];

const FUNCTION_TYPES: &[&str] = &["AWS::Serverless::Function", "AWS::Lambda::Function"];

fn template_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")
}

/// Loads a CloudFormation/SAM YAML template as JSON, with short-form intrinsic tags expanded.
fn parse_template(text: &str) -> Result<Value, String> {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("template is not valid YAML: {e}"))?;
    yaml_to_json(yaml)
}

fn load_template() -> Value {
    let path = template_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_template(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_to_json(value: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| format!("number {n}: {e}"))?,
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = yaml_to_json(tagged.value)?;
            match name {
                "Ref" | "Condition" => json!({ name: inner }),
                "GetAtt" => match inner {
                    // `!GetAtt Resource.Attribute` (attribute names may contain dots, e.g. Endpoint.Address)
                    Value::String(s) => {
                        let (resource, attribute) = s
                            .split_once('.')
                            .ok_or_else(|| format!("!GetAtt {s}: expected Resource.Attribute"))?;
                        json!({ "Fn::GetAtt": [resource, attribute] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                "Base64" | "Cidr" | "FindInMap" | "GetAZs" | "ImportValue" | "Join" | "Select" | "Split" | "Sub"
                | "Transform" | "And" | "Equals" | "If" | "Not" | "Or" | "Length" | "ToJsonString" => {
                    json!({ format!("Fn::{name}"): inner })
                }
                other => return Err(format!("unknown CloudFormation tag !{other}")),
            }
        }
    })
}

fn resources(template: &Value) -> &Map<String, Value> {
    template["Resources"]
        .as_object()
        .expect("template has a Resources mapping")
}

fn resources_of_type<'a>(template: &'a Value, types: &'a [&str]) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
    resources(template)
        .iter()
        .filter(move |(_, r)| types.contains(&r["Type"].as_str().unwrap_or_default()))
}

/// The logical id a `Ref`/`Fn::GetAtt` (or `Fn::Sub` of one) points at, if any.
fn referenced_id(value: &Value) -> Option<&str> {
    if let Some(id) = value.get("Ref").and_then(Value::as_str) {
        return Some(id);
    }
    if let Some(att) = value.get("Fn::GetAtt") {
        return match att {
            Value::Array(parts) => parts.first().and_then(Value::as_str),
            Value::String(s) => s.split('.').next(),
            _ => None,
        };
    }
    None
}

/// A value as a list; a conditional item (`!If [Cond, A, B]`) counts as both of its branches (either may
/// be in effect), `AWS::NoValue` as nothing.
fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Null => vec![],
        Value::Array(items) => items.iter().flat_map(as_list).collect(),
        Value::Object(map)
            if map.len() == 1
                && map
                    .get("Fn::If")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.len() == 3) =>
        {
            let branches = map["Fn::If"].as_array().expect("checked");
            branches[1..].iter().flat_map(as_list).collect()
        }
        Value::Object(map) if map.len() == 1 && map.get("Ref") == Some(&json!("AWS::NoValue")) => vec![],
        other => vec![other],
    }
}

// ------------------------------------------------------------------ checks

/// Every policy statement in the template (IAM roles and policies, SAM `Policies`, resource policies,
/// key policies), with a path naming where it is.
fn policy_statements(template: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(path: String, value: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "Statement" {
                        for (i, statement) in as_list(v).into_iter().enumerate() {
                            out.push((format!("{path}.Statement[{i}]"), statement));
                        }
                    } else {
                        walk(format!("{path}.{k}"), v, out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(format!("{path}[{i}]"), v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (id, resource) in resources(template) {
        walk(id.clone(), resource, &mut out);
    }
    out
}

fn check_wildcard_actions(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, statement) in policy_statements(template) {
        if statement.get("NotAction").is_some() {
            problems.push(format!("{path}: NotAction grants everything else; list the actions"));
        }
        for action in as_list(&statement["Action"]) {
            match action.as_str() {
                Some(a) if a.contains('*') => problems.push(format!("{path}: wildcard action {a:?}")),
                Some(_) => {}
                None => problems.push(format!("{path}: action is not a literal string: {action}")),
            }
        }
    }
    problems
}

fn check_wildcard_resources(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, statement) in policy_statements(template) {
        // In a key policy `*` means "this key"; resource policies name their resource implicitly.
        if path.contains(".KeyPolicy.") {
            continue;
        }
        let star = as_list(&statement["Resource"]).iter().any(|r| r.as_str() == Some("*"));
        if !star {
            continue;
        }
        for action in as_list(&statement["Action"]) {
            let action = action.as_str().unwrap_or_default();
            if !ACTIONS_WITHOUT_RESOURCE_LEVEL.contains(&action) {
                problems.push(format!(
                    "{path}: Resource \"*\" for {action:?}, which supports resource-level permissions"
                ));
            }
        }
    }
    problems
}

fn check_function_roles(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, function) in resources_of_type(template, FUNCTION_TYPES) {
        let props = &function["Properties"];
        match props.get("Role") {
            None if function["Type"] == "AWS::Serverless::Function" => {
                // SAM generates a role per function from `Policies`; without any the function has
                // only the basic execution role, which means it was not thought through.
                if as_list(&props["Policies"]).is_empty() {
                    problems.push(format!(
                        "{id}: no Role and no Policies: give it its own role with the permissions it uses"
                    ));
                }
            }
            None => problems.push(format!("{id}: no Role")),
            Some(role) => match referenced_id(role) {
                Some(role_id) => users.entry(role_id.to_owned()).or_default().push(id.clone()),
                None => problems.push(format!("{id}: Role {role} is not a role defined in this template")),
            },
        }
    }
    let all = resources(template);
    for (role_id, functions) in users {
        let Some(role) = all.get(&role_id) else {
            problems.push(format!("{functions:?}: Role refers to missing resource {role_id}"));
            continue;
        };
        if role["Type"] != "AWS::IAM::Role" {
            problems.push(format!("{functions:?}: {role_id} is not an AWS::IAM::Role"));
            continue;
        }
        if functions.len() > 1 {
            problems.push(format!(
                "role {role_id} is shared by {functions:?}: each function needs its own role"
            ));
        }
        let inline = !as_list(&role["Properties"]["Policies"]).is_empty();
        let managed = !as_list(&role["Properties"]["ManagedPolicyArns"]).is_empty();
        let attached = all.values().any(|r| {
            matches!(r["Type"].as_str(), Some("AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy"))
                && as_list(&r["Properties"]["Roles"])
                    .iter()
                    .any(|v| referenced_id(v) == Some(role_id.as_str()))
        });
        if !(inline || managed || attached) {
            problems.push(format!("role {role_id} of {functions:?} has no policies"));
        }
    }
    problems
}

fn check_function_log_groups(template: &Value) -> Vec<String> {
    let all = resources(template);
    let mut problems = Vec::new();
    for (id, function) in resources_of_type(template, FUNCTION_TYPES) {
        let group = &function["Properties"]["LoggingConfig"]["LogGroup"];
        match referenced_id(group).and_then(|g| all.get(g)) {
            Some(r) if r["Type"] == "AWS::Logs::LogGroup" => {}
            _ => problems.push(format!(
                "{id}: LoggingConfig.LogGroup must reference a log group of this template (with retention)"
            )),
        }
    }
    problems
}

/// Logical ids of queues that are some queue's redrive target.
fn dead_letter_queues(template: &Value) -> BTreeSet<String> {
    resources_of_type(template, &["AWS::SQS::Queue"])
        .filter_map(|(_, q)| referenced_id(&q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]).map(str::to_owned))
        .collect()
}

fn check_queues(template: &Value) -> Vec<String> {
    let dlqs = dead_letter_queues(template);
    let all = resources(template);
    let mut problems = Vec::new();
    for (id, queue) in resources_of_type(template, &["AWS::SQS::Queue"]) {
        let props = &queue["Properties"];
        let sse = props["SqsManagedSseEnabled"] == Value::Bool(true) || props.get("KmsMasterKeyId").is_some();
        if !sse {
            problems.push(format!(
                "{id}: no server-side encryption (SqsManagedSseEnabled: true or KmsMasterKeyId)"
            ));
        }
        if dlqs.contains(id) {
            continue;
        }
        match referenced_id(&props["RedrivePolicy"]["deadLetterTargetArn"]) {
            Some(target) if all.get(target).map(|r| &r["Type"]) == Some(&json!("AWS::SQS::Queue")) => {}
            Some(target) => problems.push(format!("{id}: redrive target {target} is not a queue of this template")),
            None => problems.push(format!(
                "{id}: no RedrivePolicy with a deadLetterTargetArn (a queue without a dead-letter queue)"
            )),
        }
    }
    problems
}

/// The (namespace, metric, dimension values) an alarm watches: its single metric or each MetricStat.
fn alarm_metrics(alarm: &Value) -> Vec<(&Value, &Value, &Value)> {
    let props = &alarm["Properties"];
    let mut out = Vec::new();
    if props.get("MetricName").is_some() {
        out.push((&props["Namespace"], &props["MetricName"], &props["Dimensions"]));
    }
    for m in as_list(&props["Metrics"]) {
        let metric = &m["MetricStat"]["Metric"];
        if metric.is_object() {
            out.push((&metric["Namespace"], &metric["MetricName"], &metric["Dimensions"]));
        }
    }
    out
}

fn check_dead_letter_alarms(template: &Value) -> Vec<String> {
    let alarms: Vec<_> = resources_of_type(template, &["AWS::CloudWatch::Alarm"])
        .map(|(_, a)| a)
        .collect();
    let mut problems = Vec::new();
    for dlq in dead_letter_queues(template) {
        let watched = alarms.iter().any(|alarm| {
            let has_action = !as_list(&alarm["Properties"]["AlarmActions"]).is_empty();
            has_action
                && alarm_metrics(alarm).iter().any(|(ns, name, dims)| {
                    *ns == "AWS/SQS"
                        && *name == "ApproximateNumberOfMessagesVisible"
                        && as_list(dims)
                            .iter()
                            .any(|d| d["Name"] == "QueueName" && referenced_id(&d["Value"]) == Some(&dlq))
                })
        });
        if !watched {
            problems.push(format!(
                "dead-letter queue {dlq}: no alarm with an action on ApproximateNumberOfMessagesVisible"
            ));
        }
    }
    problems
}

fn check_event_sources(template: &Value) -> Vec<String> {
    fn reports_failures(props: &Value) -> bool {
        as_list(&props["FunctionResponseTypes"])
            .iter()
            .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
    }
    let mut problems = Vec::new();
    for (id, mapping) in resources_of_type(template, &["AWS::Lambda::EventSourceMapping"]) {
        if !reports_failures(&mapping["Properties"]) {
            problems.push(format!(
                "{id}: event source mapping without FunctionResponseTypes [ReportBatchItemFailures]"
            ));
        }
    }
    for (id, function) in resources_of_type(template, &["AWS::Serverless::Function"]) {
        if let Some(events) = function["Properties"]["Events"].as_object() {
            for (name, event) in events {
                let batched = matches!(event["Type"].as_str(), Some("SQS" | "Kinesis" | "DynamoDB"));
                if batched && !reports_failures(&event["Properties"]) {
                    problems.push(format!(
                        "{id}.Events.{name}: event source without FunctionResponseTypes [ReportBatchItemFailures]"
                    ));
                }
            }
        }
    }
    problems
}

/// Every HTTP API route that reads alert state (a GET or HEAD, or an ANY route, under `/v1/alerts/`) sits
/// behind IAM auth, on an API that enables the IAM authorizer; the webhook route (POST) is the only
/// route without it (it is signed instead). At least one status route must exist, so the check cannot pass
/// vacuously.
fn check_status_route_auth(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut status_routes = 0;
    for (id, function) in resources_of_type(template, &["AWS::Serverless::Function"]) {
        let Some(events) = function["Properties"]["Events"].as_object() else {
            continue;
        };
        for (name, event) in events {
            if event["Type"] != "HttpApi" {
                continue;
            }
            let props = &event["Properties"];
            let method = props["Method"].as_str().unwrap_or("ANY").to_ascii_uppercase();
            let path = props["Path"].as_str().unwrap_or("");
            let authorizer = props["Auth"]["Authorizer"].as_str();
            if method == "POST" && path == "/v1/alerts" {
                continue;
            }
            if path.starts_with("/v1/alerts/") || path.starts_with("/{") || path == "$default" {
                status_routes += 1;
                if authorizer != Some("AWS_IAM") {
                    problems.push(format!(
                        "{id}.Events.{name}: {method} {path} reads alert state without IAM auth \
                         (Auth.Authorizer is {authorizer:?}, must be AWS_IAM)"
                    ));
                }
                let api = referenced_id(&props["ApiId"]).unwrap_or("");
                if template["Resources"][api]["Properties"]["Auth"]["EnableIamAuthorizer"] != true {
                    problems.push(format!(
                        "{id}.Events.{name}: API {api:?} does not enable the IAM authorizer"
                    ));
                }
            }
        }
    }
    if status_routes == 0 {
        problems.push("no status route (GET /v1/alerts/{alert_id}) found to check for IAM auth".into());
    }
    problems
}

/// The SQS queues of this template that `value` (a `Ref`/`Fn::GetAtt`) points at.
fn queue_id<'a>(template: &Value, value: &'a Value) -> Option<&'a str> {
    referenced_id(value)
        .filter(|id| resources(template).get(*id).map(|r| &r["Type"]) == Some(&json!("AWS::SQS::Queue")))
}

/// The SQS actions each queue gets from the inline policies of `role`.
fn queue_actions<'a>(template: &Value, role: &'a Value) -> BTreeMap<&'a str, BTreeSet<String>> {
    let mut out: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for policy in as_list(&role["Properties"]["Policies"]) {
        for statement in as_list(&policy["PolicyDocument"]["Statement"]) {
            let actions: Vec<String> = as_list(&statement["Action"])
                .iter()
                .filter_map(|a| a.as_str())
                .filter(|a| a.starts_with("sqs:"))
                .map(str::to_owned)
                .collect();
            for resource in as_list(&statement["Resource"]) {
                if let Some(id) = queue_id(template, resource) {
                    out.entry(id).or_default().extend(actions.iter().cloned());
                }
            }
        }
    }
    out
}

/// Least privilege on the queues: a function's role acts only on queues the function names (a variable
/// of its environment or one of its event sources), and every SQS event source of a function can be
/// consumed by its role (receive, delete, change visibility, read attributes).
fn check_queue_access(template: &Value) -> Vec<String> {
    const CONSUME: [&str; 4] = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    ];
    let mut problems = Vec::new();
    for (id, function) in resources_of_type(template, FUNCTION_TYPES) {
        let props = &function["Properties"];
        let Some(role) = props
            .get("Role")
            .and_then(referenced_id)
            .and_then(|r| resources(template).get(r))
        else {
            continue;
        };
        let mut named: BTreeSet<&str> = props["Environment"]["Variables"]
            .as_object()
            .map(|vars| vars.values().filter_map(|v| queue_id(template, v)).collect())
            .unwrap_or_default();
        let mut sources = Vec::new();
        if let Some(events) = props["Events"].as_object() {
            for (name, event) in events.iter().filter(|(_, e)| e["Type"] == "SQS") {
                if let Some(queue) = queue_id(template, &event["Properties"]["Queue"]) {
                    named.insert(queue);
                    sources.push((name, queue));
                }
            }
        }
        let access = queue_actions(template, role);
        for (queue, actions) in &access {
            if !named.contains(queue) {
                problems.push(format!(
                    "{id}: its role has {actions:?} on {queue}, a queue the function does not name (least privilege)"
                ));
            }
        }
        for (name, queue) in sources {
            let granted = access.get(queue).cloned().unwrap_or_default();
            let missing: Vec<&str> = CONSUME.iter().copied().filter(|a| !granted.contains(*a)).collect();
            if !missing.is_empty() {
                problems.push(format!("{id}.Events.{name}: its role lacks {missing:?} on {queue}"));
            }
        }
    }
    problems
}

fn check_log_retention(template: &Value) -> Vec<String> {
    resources_of_type(template, &["AWS::Logs::LogGroup"])
        .filter(|(_, g)| g["Properties"].get("RetentionInDays").is_none())
        .map(|(id, _)| format!("{id}: log group without RetentionInDays (logs would be kept forever)"))
        .collect()
}

fn all_checks(template: &Value) -> Vec<String> {
    [
        check_wildcard_actions(template),
        check_wildcard_resources(template),
        check_function_roles(template),
        check_function_log_groups(template),
        check_queues(template),
        check_dead_letter_alarms(template),
        check_event_sources(template),
        check_queue_access(template),
        check_status_route_auth(template),
        check_log_retention(template),
    ]
    .concat()
}

// ------------------------------------------------------------------ the real template passes

#[test]
fn template_passes_every_policy_check() {
    let template = load_template();
    let problems = all_checks(&template);
    assert!(
        problems.is_empty(),
        "template.yaml violates deploy policy:\n{}",
        problems.join("\n")
    );
}

#[test]
fn template_has_what_the_checks_look_at() {
    // Guards against checks passing vacuously because the template lost its resources.
    let template = load_template();
    assert_eq!(resources_of_type(&template, FUNCTION_TYPES).count(), 3);
    assert_eq!(resources_of_type(&template, &["AWS::SQS::Queue"]).count(), 5);
    assert_eq!(
        dead_letter_queues(&template),
        BTreeSet::from(["BatchDeadLetterQueue".to_owned(), "DeadLetterQueue".to_owned()])
    );
    assert!(policy_statements(&template).len() >= 20);
    for lane in ["RealtimeQueue", "CriticalQueue"] {
        assert_eq!(
            template["Resources"]["DeliverFunction"]["Properties"]["Events"][lane]["Type"], "SQS",
            "{lane}"
        );
    }
}

#[test]
fn the_critical_lane_has_its_own_queue_mapping_and_concurrency() {
    let t = load_template();
    let r = &t["Resources"];
    let critical = &r["CriticalQueue"]["Properties"];
    assert_eq!(
        critical["RedrivePolicy"]["deadLetterTargetArn"],
        json!({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]})
    );
    assert_eq!(
        critical["VisibilityTimeout"],
        r["RealtimeQueue"]["Properties"]["VisibilityTimeout"]
    );
    let mapping = &r["DeliverFunction"]["Properties"]["Events"]["CriticalQueue"]["Properties"];
    assert_eq!(mapping["Queue"], json!({"Fn::GetAtt": ["CriticalQueue", "Arn"]}));
    assert_eq!(
        mapping["ScalingConfig"]["MaximumConcurrency"],
        json!({"Ref": "CriticalMaximumConcurrency"}),
        "its own concurrency, not the realtime queue's"
    );
    let param = &t["Parameters"]["CriticalMaximumConcurrency"];
    // Lambda's MaximumConcurrency is 2..=1000
    assert!(param["Default"].as_u64().is_some_and(|d| d >= 2), "{param}");
    assert!(param["MinValue"].as_u64().is_some_and(|m| m >= 2), "{param}");
    for function in ["IngestFunction", "DeliverFunction"] {
        assert_eq!(
            r[function]["Properties"]["Environment"]["Variables"]["CRITICAL_QUEUE_URL"],
            json!({"Ref": "CriticalQueue"}),
            "{function}"
        );
    }
    let actions = |role: &str| {
        queue_actions(&t, &r[role])
            .get("CriticalQueue")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        actions("IngestRole"),
        BTreeSet::from(["sqs:SendMessage".into(), "sqs:GetQueueAttributes".into()])
    );
    assert_eq!(
        actions("DeliverRole"),
        BTreeSet::from([
            "sqs:ReceiveMessage".into(),
            "sqs:DeleteMessage".into(),
            "sqs:ChangeMessageVisibility".into(),
            "sqs:GetQueueAttributes".into()
        ]),
        "deliver consumes the critical queue and never sends to it"
    );
    assert!(
        actions("FlushRole").is_empty(),
        "flush has no business with the critical queue"
    );
    assert!(t["Outputs"]["CriticalQueueUrl"].is_object());
}

#[test]
fn the_receive_limit_default_is_the_one_derived_from_the_retry_window() {
    let template = load_template();
    let window = template["Parameters"]["RetryWindowSeconds"]["Default"]
        .as_u64()
        .expect("RetryWindowSeconds default");
    let policy = relay_core::BackoffPolicy {
        window: std::time::Duration::from_secs(window),
        ..relay_core::BackoffPolicy::default()
    };
    assert_eq!(
        template["Parameters"]["MaxReceiveCount"]["Default"].as_u64(),
        Some(u64::from(relay_pipeline::defaults::max_receive_count(&policy))),
        "MaxReceiveCount's default must be relay_pipeline::defaults::max_receive_count of the default window"
    );
    for queue in ["RealtimeQueue", "CriticalQueue", "BatchQueue"] {
        assert_eq!(
            template["Resources"][queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"],
            json!({"Ref": "MaxReceiveCount"}),
            "{queue}"
        );
    }
}

#[test]
fn short_form_tags_become_long_form_intrinsics() {
    let t = parse_template(
        "Resources:\n  A:\n    Type: X\n    Properties:\n      R: !Ref B\n      G: !GetAtt B.Arn\n      D: !GetAtt C.Endpoint.Address\n      S: !Sub 'x-${B}'\n      F: !FindInMap [M, K, V]\n      L: [!GetAtt B.QueueName]\n",
    )
    .unwrap();
    let p = &t["Resources"]["A"]["Properties"];
    assert_eq!(p["R"], json!({"Ref": "B"}));
    assert_eq!(p["G"], json!({"Fn::GetAtt": ["B", "Arn"]}));
    assert_eq!(p["D"], json!({"Fn::GetAtt": ["C", "Endpoint.Address"]}));
    assert_eq!(p["S"], json!({"Fn::Sub": "x-${B}"}));
    assert_eq!(p["F"], json!({"Fn::FindInMap": ["M", "K", "V"]}));
    assert_eq!(referenced_id(&p["L"][0]), Some("B"));
}

#[test]
fn unknown_tags_and_bad_yaml_are_named() {
    let err = parse_template("Resources:\n  A: !Bogus x\n").unwrap_err();
    assert!(err.contains("!Bogus"), "{err}");
    let err = parse_template("Resources: [\n").unwrap_err();
    assert!(err.contains("not valid YAML"), "{err}");
    let err = parse_template("Resources:\n  A: !GetAtt NoDot\n").unwrap_err();
    assert!(err.contains("Resource.Attribute"), "{err}");
}

// ------------------------------------------------------------------ negative tests (mutated copies)

fn mutated(edit: impl FnOnce(&mut Value)) -> Value {
    let mut t = load_template();
    edit(&mut t);
    t
}

fn statements_of_role<'a>(t: &'a mut Value, role: &str) -> &'a mut Vec<Value> {
    t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array_mut()
        .expect("role has an inline policy with statements")
}

fn assert_caught(problems: Vec<String>, needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning {needle:?}, got {problems:#?}"
    );
}

#[test]
fn wildcard_actions_are_caught() {
    let t = mutated(|t| {
        statements_of_role(t, "IngestRole")[0]["Action"] = json!(["sqs:*"]);
    });
    assert_caught(check_wildcard_actions(&t), "wildcard action \"sqs:*\"");

    let t = mutated(|t| {
        statements_of_role(t, "DeliverRole")
            .push(json!({"Effect": "Allow", "Action": "*", "Resource": {"Ref": "FailureTopic"}}));
    });
    assert_caught(check_wildcard_actions(&t), "wildcard action \"*\"");

    let t = mutated(|t| {
        let key = &mut t["Resources"]["NotificationKey"]["Properties"]["KeyPolicy"]["Statement"][0];
        key["Action"] = json!("kms:*");
    });
    assert_caught(check_wildcard_actions(&t), "NotificationKey");

    let t = mutated(|t| {
        statements_of_role(t, "FlushRole")
            .push(json!({"Effect": "Allow", "NotAction": "iam:PassRole", "Resource": "*"}));
    });
    assert_caught(check_wildcard_actions(&t), "NotAction");
}

#[test]
fn wildcard_actions_in_sam_policies_are_caught() {
    let t = mutated(|t| {
        t["Resources"]["FlushFunction"]["Properties"]["Policies"] = json!([
            {"Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": {"Fn::GetAtt": ["LedgerTable", "Arn"]}}]}
        ]);
    });
    assert_caught(check_wildcard_actions(&t), "FlushFunction");
}

#[test]
fn star_resources_are_caught_unless_the_api_has_no_resource_level_permissions() {
    let t = mutated(|t| {
        statements_of_role(t, "DeliverRole")
            .push(json!({"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": "*"}));
    });
    assert_caught(check_wildcard_resources(&t), "\"dynamodb:GetItem\"");
    // The real template uses "*" only for X-Ray, which has no resource-level permissions.
    assert!(check_wildcard_resources(&load_template()).is_empty());
}

#[test]
fn a_shared_role_is_caught() {
    let t = mutated(|t| {
        t["Resources"]["DeliverFunction"]["Properties"]["Role"] = json!({"Fn::GetAtt": ["IngestRole", "Arn"]});
    });
    assert_caught(check_function_roles(&t), "shared by");
}

#[test]
fn a_function_without_role_or_policies_is_caught() {
    let t = mutated(|t| {
        let props = t["Resources"]["FlushFunction"]["Properties"].as_object_mut().unwrap();
        props.remove("Role");
        props.remove("Policies");
    });
    assert_caught(check_function_roles(&t), "FlushFunction: no Role and no Policies");

    let t = mutated(|t| {
        t["Resources"]["IngestFunction"]["Properties"]["Role"] = json!("arn:aws:iam::123456789012:role/admin");
    });
    assert_caught(check_function_roles(&t), "not a role defined in this template");

    let t = mutated(|t| {
        t["Resources"]["DeliverRole"]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("Policies");
    });
    assert_caught(check_function_roles(&t), "role DeliverRole of");
}

#[test]
fn a_function_without_its_own_log_group_is_caught() {
    let t = mutated(|t| {
        t["Resources"]["IngestFunction"]["Properties"]["LoggingConfig"]
            .as_object_mut()
            .unwrap()
            .remove("LogGroup");
    });
    assert_caught(check_function_log_groups(&t), "IngestFunction");
}

#[test]
fn a_queue_without_dead_letter_queue_is_caught() {
    let t = mutated(|t| {
        t["Resources"]["RealtimeQueue"]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("RedrivePolicy");
    });
    let problems = check_queues(&t);
    assert_caught(problems, "RealtimeQueue: no RedrivePolicy");
}

#[test]
fn a_redrive_to_something_that_is_not_a_queue_is_caught() {
    let t = mutated(|t| {
        t["Resources"]["BatchQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] =
            json!({"Ref": "FailureTopic"});
    });
    assert_caught(check_queues(&t), "BatchQueue: redrive target FailureTopic");
}

#[test]
fn a_queue_without_encryption_is_caught() {
    // A dead-letter queue needs no redrive of its own, but it does need SSE.
    let t = mutated(|t| {
        t["Resources"]["DeadLetterQueue"]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("SqsManagedSseEnabled");
    });
    let problems = check_queues(&t);
    assert_caught(problems.clone(), "DeadLetterQueue: no server-side encryption");
    assert_eq!(problems.len(), 1, "{problems:#?}");

    let t = mutated(|t| {
        t["Resources"]["BatchQueue"]["Properties"]["SqsManagedSseEnabled"] = json!(false);
    });
    assert_caught(check_queues(&t), "BatchQueue: no server-side encryption");
}

#[test]
fn a_dead_letter_queue_without_alarm_is_caught() {
    let t = mutated(|t| {
        t["Resources"]
            .as_object_mut()
            .unwrap()
            .remove("DeadLetterQueueNotEmptyAlarm");
    });
    assert_caught(check_dead_letter_alarms(&t), "dead-letter queue DeadLetterQueue");

    // An alarm that notifies nobody does not count.
    let t = mutated(|t| {
        t["Resources"]["BatchDeadLetterQueueNotEmptyAlarm"]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("AlarmActions");
    });
    assert_caught(check_dead_letter_alarms(&t), "BatchDeadLetterQueue");
}

#[test]
fn an_event_source_without_partial_batch_failures_is_caught() {
    let t = mutated(|t| {
        t["Resources"]["DeliverFunction"]["Properties"]["Events"]["RealtimeQueue"]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("FunctionResponseTypes");
    });
    assert_caught(check_event_sources(&t), "DeliverFunction.Events.RealtimeQueue");

    let t = mutated(|t| {
        t["Resources"].as_object_mut().unwrap().insert(
            "ExtraMapping".into(),
            json!({"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
                "EventSourceArn": {"Fn::GetAtt": ["BatchQueue", "Arn"]},
                "FunctionName": {"Ref": "FlushFunction"}}}),
        );
    });
    assert_caught(check_event_sources(&t), "ExtraMapping");
}

#[test]
fn queue_access_beyond_what_a_function_names_is_caught() {
    // ingest may send to the critical queue only while it is told the queue's URL
    let t = mutated(|t| {
        t["Resources"]["IngestFunction"]["Properties"]["Environment"]["Variables"]
            .as_object_mut()
            .unwrap()
            .remove("CRITICAL_QUEUE_URL");
    });
    assert_caught(check_queue_access(&t), "IngestFunction: its role has");
    // flush gets a permission on a queue it never names
    let t = mutated(|t| {
        statements_of_role(t, "FlushRole").push(json!({
            "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": ["CriticalQueue", "Arn"]}
        }));
    });
    assert_caught(check_queue_access(&t), "a queue the function does not name");
}

#[test]
fn an_event_source_the_role_cannot_consume_is_caught() {
    let t = mutated(|t| {
        for statement in statements_of_role(t, "DeliverRole") {
            if statement["Sid"] == "ConsumeRealtimeQueues" {
                statement["Resource"] = json!({"Fn::GetAtt": ["RealtimeQueue", "Arn"]});
            }
        }
    });
    assert_caught(
        check_queue_access(&t),
        "DeliverFunction.Events.CriticalQueue: its role lacks",
    );
}

#[test]
fn a_status_route_without_iam_auth_is_caught() {
    fn route(t: &mut Value) -> &mut Value {
        &mut t["Resources"]["IngestFunction"]["Properties"]["Events"]["GetAlertStatus"]["Properties"]
    }
    // the real template: the status route is IAM-authorised on an API with the IAM authorizer
    let t = load_template();
    assert!(
        check_status_route_auth(&t).is_empty(),
        "{:?}",
        check_status_route_auth(&t)
    );

    let t = mutated(|t| {
        route(t).as_object_mut().unwrap().remove("Auth");
    });
    assert_caught(check_status_route_auth(&t), "IngestFunction.Events.GetAlertStatus");
    let t = mutated(|t| route(t)["Auth"]["Authorizer"] = json!("NONE"));
    assert_caught(check_status_route_auth(&t), "must be AWS_IAM");
    let t = mutated(|t| {
        t["Resources"]["HttpApi"]["Properties"]["Auth"]["EnableIamAuthorizer"] = json!(false);
    });
    assert_caught(check_status_route_auth(&t), "does not enable the IAM authorizer");
    // an extra catch-all route without auth would expose the status as well
    let t = mutated(|t| {
        t["Resources"]["IngestFunction"]["Properties"]["Events"]["CatchAll"] = json!({
            "Type": "HttpApi",
            "Properties": {"ApiId": {"Ref": "HttpApi"}, "Method": "ANY", "Path": "/{proxy+}"}
        });
    });
    assert_caught(check_status_route_auth(&t), "IngestFunction.Events.CatchAll");
    // and a template that lost its status route does not pass vacuously
    let t = mutated(|t| {
        t["Resources"]["IngestFunction"]["Properties"]["Events"]
            .as_object_mut()
            .unwrap()
            .remove("GetAlertStatus");
    });
    assert_caught(check_status_route_auth(&t), "no status route");
}

#[test]
fn a_log_group_without_retention_is_caught() {
    let t = mutated(|t| {
        t["Resources"]["ApiAccessLogGroup"]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("RetentionInDays");
    });
    assert_caught(check_log_retention(&t), "ApiAccessLogGroup");
}

// ------------------------------------------------------------------ dashboard

/// The dashboard body with every `${...}` of its `Fn::Sub` replaced by a placeholder, parsed as JSON.
fn dashboard_body(template: &Value) -> Result<Value, String> {
    let sub = &template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"];
    let text = sub[0]
        .as_str()
        .or_else(|| sub.as_str())
        .ok_or("Dashboard.DashboardBody is not a Fn::Sub of a string")?;
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or("unterminated ${ in DashboardBody")?;
        let name = &rest[start + 2..start + end];
        // Numeric parameters are substituted outside of JSON strings.
        out.push_str(if name.ends_with("Seconds") { "60" } else { "x" });
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).map_err(|e| format!("DashboardBody is not valid JSON: {e}"))
}

#[test]
fn dashboard_body_is_json_and_shows_every_metric() {
    let template = load_template();
    let body = dashboard_body(&template).unwrap();
    let widgets = body["widgets"].as_array().expect("widgets");
    assert!(widgets.len() >= 10, "{} widgets", widgets.len());
    let text = body.to_string();
    for metric in [
        "AlertsAccepted",
        "AlertsRejected",
        "RecordsCreated",
        "ThreadNotes",
        "LifecycleEvents",
        "ThreadEscalations",
        "CallbacksSent",
        "DeliveryRetries",
        "DeliveryFailed",
        "DeliveryLatencyMs",
        "ServiceNowCallMs",
        "BatchSize",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "error_class",
    ] {
        assert!(text.contains(metric), "dashboard lacks {metric}");
    }
    let sub = &template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"];
    assert!(
        sub[0].as_str().is_some_and(|b| b.contains("${CriticalQueueName}")),
        "the dashboard shows the critical queue's oldest message"
    );
    assert_eq!(
        sub[1]["CriticalQueueName"],
        json!({"Fn::GetAtt": ["CriticalQueue", "QueueName"]})
    );
}

#[test]
fn a_broken_dashboard_body_is_caught() {
    let t = mutated(|t| {
        let sub = &mut t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0];
        let text = sub.as_str().unwrap().replacen("\"widgets\": [", "\"widgets\": [,", 1);
        *sub = Value::String(text);
    });
    let err = dashboard_body(&t).unwrap_err();
    assert!(err.contains("not valid JSON"), "{err}");
}

// ------------------------------------------------------------------ the Lambda dev loop's environment

/// The `KEY = "value"` pairs of the `[package.metadata.lambda.env]` table of a Cargo.toml.
fn cargo_lambda_env(manifest: &str) -> Map<String, Value> {
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[package.metadata.lambda.env]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                Value::String(v.trim().trim_matches('"').to_string()),
            )
        })
        .collect()
}

#[test]
fn the_dev_environments_set_every_variable_the_template_gives_each_function() {
    let template = load_template();
    let sam_env: Value = serde_json::from_str(
        &std::fs::read_to_string(template_path().with_file_name("events").join("env.json")).unwrap(),
    )
    .unwrap();
    for (function, binary) in [
        ("IngestFunction", "ingest"),
        ("DeliverFunction", "deliver"),
        ("FlushFunction", "flush"),
    ] {
        let manifest = template_path()
            .with_file_name("functions")
            .join(binary)
            .join("Cargo.toml");
        let cargo_env = cargo_lambda_env(&std::fs::read_to_string(&manifest).unwrap());
        let vars = template["Resources"][function]["Properties"]["Environment"]["Variables"]
            .as_object()
            .unwrap();
        assert!(vars.len() >= 8, "{function}: {vars:?}");
        for (name, value) in vars {
            // optional settings (`!If [HasX, …, AWS::NoValue]`) may be left out
            if value.get("Fn::If").is_some() {
                continue;
            }
            assert!(
                sam_env[function].get(name).is_some(),
                "events/env.json {function} lacks {name}"
            );
            assert!(cargo_env.contains_key(name), "{} lacks {name}", manifest.display());
        }
        assert_eq!(
            cargo_env["AWS_ENDPOINT_URL"], "http://127.0.0.1:5000",
            "{function}: moto"
        );
    }
    let samconfig = std::fs::read_to_string(template_path().with_file_name("samconfig.toml")).unwrap();
    assert!(
        samconfig.lines().any(|l| l.trim() == "beta_features = true"),
        "sam build needs the beta flag for rust-cargolambda"
    );
}
