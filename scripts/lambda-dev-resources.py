"""Create the resources of events/env.json and [package.metadata.lambda.env] in a running moto_server, so
`cargo lambda watch` / `sam local invoke` run the three functions against moto and the ServiceNow simulator.

    /work/.../moto_server -H 127.0.0.1 -p 5000 &          # or .venv/bin/moto_server
    cargo run -p servicenow-sim -- --port 8091 &
    .venv/bin/python scripts/lambda-dev-resources.py [--endpoint http://127.0.0.1:5000] [--sim http://127.0.0.1:8091]

Prints the webhook signing secret file it wrote (for `relay sign --apigw-event --secret-file`).
"""
import argparse
import json
import secrets
import base64
import os

import boto3

parser = argparse.ArgumentParser()
parser.add_argument("--endpoint", default="http://127.0.0.1:5000")
parser.add_argument("--sim", default="http://127.0.0.1:8091")
parser.add_argument("--secret-out", default="relay-data/dev-webhook-secret.json")
args = parser.parse_args()

kw = dict(endpoint_url=args.endpoint, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
sqs = boto3.client("sqs", **kw)
dlq = sqs.create_queue(QueueName="relay-dev-dlq")["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1000"})
sqs.create_queue(QueueName="relay-dev-realtime", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive})
sqs.create_queue(QueueName="relay-dev-critical", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive})
sqs.create_queue(QueueName="relay-dev-batch", Attributes={"VisibilityTimeout": "600"})

ddb = boto3.client("dynamodb", **kw)
if "relay-dev-ledger" not in ddb.list_tables()["TableNames"]:
    # the sparse index `watched` lists the watch entries (only they carry watch_shard), as in template.yaml
    ddb.create_table(TableName="relay-dev-ledger", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "alert_id", "AttributeType": "S"},
                                           {"AttributeName": "watch_shard", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "alert_id", "KeyType": "HASH"}],
                     GlobalSecondaryIndexes=[{
                         "IndexName": "watched",
                         "KeySchema": [{"AttributeName": "watch_shard", "KeyType": "HASH"},
                                       {"AttributeName": "alert_id", "KeyType": "RANGE"}],
                         "Projection": {"ProjectionType": "ALL"},
                     }])

whsec = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
sm = boto3.client("secretsmanager", **kw)
for name, value in [
    ("relay-dev-webhook", {"secrets": [whsec]}),
    ("relay-dev-servicenow", {"instance_url": args.sim, "auth": "basic",
                              "username": "relay", "password": "relay-password"}),
]:
    try:
        sm.create_secret(Name=name, SecretString=json.dumps(value))
    except sm.exceptions.ResourceExistsException:
        sm.put_secret_value(SecretId=name, SecretString=json.dumps(value))

boto3.client("sns", **kw).create_topic(Name="relay-dev-failures")

os.makedirs(os.path.dirname(args.secret_out) or ".", mode=0o700, exist_ok=True)
fd = os.open(args.secret_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump({"secrets": [whsec]}, f)
print(f"resources created in {args.endpoint}; signing secret in {args.secret_out}")
