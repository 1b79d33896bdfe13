#!/usr/bin/env bash
# The Lambda dev loop end to end, the binaries as Lambda runs them: builds the three function binaries
# (`ingest`, `deliver`, `flush`, the same code cargo-lambda packages as `bootstrap`), starts moto_server and
# the ServiceNow simulator, creates the dev resources (scripts/lambda-dev-resources.py, the names of
# events/env.json), and runs each binary under a stub Lambda runtime API (scripts/lambda-runtime-stub.py)
# with an events/ envelope:
#   ingest  ← `relay sign --apigw-event` of a critical and a low alert     → 202 twice, one message on the critical queue
#   deliver ← that message as an SQS event of the critical queue            → no batchItemFailures, the record
#                                                                             in the simulator, ledger COMPLETED
#   flush   ← events/lambda/scheduled-flush.json                            → the low alert's record created
#
#   scripts/lambda-dev-loop.sh            PROFILE=release for the release profile (slow to build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
profile=${PROFILE:-dev}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
python=${PYTHON:-}
for p in "$python" "$root/.venv/bin/python"; do
  [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import boto3, moto' 2>/dev/null && { python=$p; break; }
done
[ -n "$python" ] || { echo "lambda-dev-loop: a Python with boto3 and moto[server] is needed (scripts/requirements-test.txt)" >&2; exit 1; }
moto_server=$(dirname "$python")/moto_server

# The five binaries as Lambda and the loop run them (the test command's own build does not link every bin).
echo "==> [lambda] cargo build --profile $profile -p servicenow-sim -p ingest -p deliver -p flush -p relay"
cargo build --locked --quiet --profile "$profile" -p servicenow-sim -p ingest -p deliver -p flush -p relay
bin="$root/target/$dir"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

moto_port=$(free_port)
"$moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 & pids+=($!)
sim_port=$(free_port)
"$bin/servicenow-sim" --port "$sim_port" >"$work/sim.log" 2>&1 & pids+=($!)
endpoint="http://127.0.0.1:$moto_port" sim="http://127.0.0.1:$sim_port"
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "$endpoint/moto-api/" && curl -fs -o /dev/null "$sim/sim/records/sn_si_incident" && break
  sleep 0.1
done
"$python" scripts/lambda-dev-resources.py --endpoint "$endpoint" --sim "$sim" --secret-out "$work/webhook-secret.json"

# The functions' environment: events/env.json with the addresses of this run.
fn_env() { # fn_env FunctionName → KEY=VALUE lines
  "$python" - "$1" "$endpoint" <<'PY'
import json, sys
name, endpoint = sys.argv[1], sys.argv[2]
for k, v in json.load(open("events/env.json"))[name].items():
    print(f"{k}={v.replace('http://host.docker.internal:5000', endpoint)}")
PY
}
invoke() { # invoke BINARY FunctionName OUT EVENT...: one process, every event, then stop it
  local binary=$1 name=$2 out=$3; shift 3
  : >"$out"
  "$python" scripts/lambda-runtime-stub.py "$out" "$@" >"$work/$name.port" & local stub=$!
  for _ in $(seq 1 50); do [ -s "$work/$name.port" ] && break; sleep 0.1; done
  local vars=(); while IFS= read -r line; do vars+=("$line"); done < <(fn_env "$name")
  env -i PATH="$PATH" "${vars[@]}" AWS_LAMBDA_RUNTIME_API="127.0.0.1:$(cat "$work/$name.port")" \
    AWS_LAMBDA_FUNCTION_NAME="relay-$name" AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 AWS_LAMBDA_FUNCTION_VERSION='$LATEST' \
    "$binary" >"$work/$name.log" 2>&1 & local fn=$!
  for _ in $(seq 1 300); do [ "$(wc -l <"$out")" -ge $# ] && break; sleep 0.1; done
  kill "$fn" "$stub" 2>/dev/null || true; wait "$fn" "$stub" 2>/dev/null || true
  [ "$(wc -l <"$out")" -ge $# ] || { echo "lambda-dev-loop: $name answered $(wc -l <"$out") of $# events" >&2; cat "$work/$name.log" >&2; exit 1; }
}
check() { # check DESCRIPTION PYTHON-EXPRESSION-over-answers(a)
  "$python" -c "import json,sys; a=[json.loads(l) for l in open(sys.argv[1])]; ok=$2; print(('ok   ' if ok else 'FAIL ')+sys.argv[2]+': '+json.dumps(a)[:300]); sys.exit(0 if ok else 1)" "$3" "$1"
}

echo "==> [lambda] ingest"
"$bin/relay" sign --apigw-event events/alerts/seed-usb-copy-847-files.json --secret-file "$work/webhook-secret.json" \
  -o "$work/post.json"
"$bin/relay" sign --apigw-event events/alerts/dlp-low.json --secret-file "$work/webhook-secret.json" -o "$work/post-low.json"
invoke "$bin/ingest" IngestFunction "$work/ingest.out" "$work/post.json" "$work/post-low.json"
check "ingest answers 202 twice" "[x['body'].get('statusCode') for x in a]==[202, 202]" "$work/ingest.out"

echo "==> [lambda] deliver"
"$python" - "$endpoint" "$work/sqs.json" <<'PY'
import json, sys, boto3
endpoint, out = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
sqs = boto3.client("sqs", **kw)
realtime = sqs.get_queue_url(QueueName="relay-dev-realtime")["QueueUrl"]
left = sqs.receive_message(QueueUrl=realtime, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
assert not left, f"the critical alert went to the realtime queue: {len(left)} message(s) there"
url = sqs.get_queue_url(QueueName="relay-dev-critical")["QueueUrl"]
msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2, AttributeNames=["All"]).get("Messages", [])
assert len(msgs) == 1, f"expected one message on the critical queue, found {len(msgs)}"
event = json.load(open("events/lambda/sqs-batch.json"))
rec = event["Records"][0]
m = msgs[0]
rec.update(messageId=m["MessageId"], receiptHandle=m["ReceiptHandle"], body=m["Body"], md5OfBody=m["MD5OfBody"],
           eventSourceARN="arn:aws:sqs:us-east-1:123456789012:relay-dev-critical")
json.dump(event, open(out, "w"))
print("ok   the critical queue holds the accepted critical alert")
PY
invoke "$bin/deliver" DeliverFunction "$work/deliver.out" "$work/sqs.json"
check "deliver reports no failed item" "a[0]['kind']=='response' and a[0]['body'].get('batchItemFailures')==[]" "$work/deliver.out"
curl -fsS "$sim/sim/records/sn_si_incident" >"$work/records.json"
"$python" -c "import json,sys; r=json.load(open(sys.argv[1]))['result']; assert len(r)==1, r; print('ok   one security incident in the simulator:', r[0].get('number'))" "$work/records.json"
ledger_states() { # ledger_states EXPECTED...: the sorted states of the alerts' ledger entries (a thread's own
  # entry, delivery "thread", a record's watch entry, "watch", and a queued callback, "callback", left out)
  "$python" - "$endpoint" "$@" <<'PY'
import sys, boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
items = boto3.client("dynamodb", **kw).scan(TableName="relay-dev-ledger")["Items"]
states = sorted(i["state"]["S"] for i in items if i.get("delivery", {}).get("S") not in ("thread", "watch", "callback"))
assert states == sys.argv[2:], f"ledger states {states}, expected {sys.argv[2:]}"
print("ok   ledger states:", states)
PY
}
ledger_states COMPLETED QUEUED

echo "==> [lambda] flush"
invoke "$bin/flush" FlushFunction "$work/flush.out" events/lambda/scheduled-flush.json
check "flush creates the record of the batched alert" "a[0]['kind']=='response' and a[0]['body']['alerts']==1 and a[0]['body']['created']==1" "$work/flush.out"
ledger_states COMPLETED COMPLETED
echo "==> [lambda] dev loop passed"
