import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { AlertRelayStack, FUNCTIONS } from '../lib/alert-relay-stack';

/** A stand-in for `cargo lambda build` output: `<binary>/bootstrap` per function (content differs per binary). */
function fakeBuildDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'alert-relay-cdk-'));
  for (const binary of Object.values(FUNCTIONS)) {
    fs.mkdirSync(path.join(dir, binary));
    fs.writeFileSync(path.join(dir, binary, 'bootstrap'), `#!/bin/sh\n# placeholder for ${binary}\nexit 1\n`);
  }
  return dir;
}

/** `Resource.Attribute` of a Fn::GetAtt in either form ("A.B" or ["A", "B"]), else undefined. */
function getAttTarget(value: unknown): string | undefined {
  const att = (value as { 'Fn::GetAtt'?: string | string[] } | undefined)?.['Fn::GetAtt'];
  return Array.isArray(att) ? att.join('.') : att;
}

describe('AlertRelayStack (template.yaml included into CDK)', () => {
  let buildDir: string;
  let template: Template;

  before(() => {
    buildDir = fakeBuildDir();
    const app = new App();
    const stack = new AlertRelayStack(app, 'test-relay', { lambdaBuildDir: buildDir });
    template = Template.fromStack(stack);
  });
  after(() => fs.rmSync(buildDir, { recursive: true, force: true }));

  it('keeps the Serverless transform, parameters and outputs of template.yaml', () => {
    const json = template.toJSON();
    assert.equal(json.Transform, 'AWS::Serverless-2016-10-31');
    template.hasParameter('LogRetentionDays', { Type: 'Number', Default: 365 });
    template.hasParameter('FlushSchedule', { Default: 'rate(5 minutes)' });
    for (const output of ['WebhookUrl', 'StatusUrl', 'ServiceNowSecretArn', 'WebhookSecretArn', 'DashboardUrl']) {
      template.hasOutput(output, {});
    }
  });

  it('deploys three arm64 provided.al2023 functions, each from its own asset and with its own role', () => {
    template.resourceCountIs('AWS::Serverless::Function', 3);
    const functions = template.findResources('AWS::Serverless::Function');
    const roles = new Set<string>();
    const keys = new Set<string>();
    for (const [id, fn] of Object.entries(functions)) {
      const p = fn.Properties;
      assert.equal(p.Runtime, 'provided.al2023', id);
      assert.deepEqual(p.Architectures, ['arm64'], id);
      assert.equal(p.Handler, 'bootstrap', id);
      assert.equal(p.Tracing, 'Active', id);
      assert.equal(p.LoggingConfig.LogFormat, 'JSON', id);
      assert.ok(p.CodeUri.Bucket && p.CodeUri.Key, `${id}: CodeUri must be the S3 asset, got ${JSON.stringify(p.CodeUri)}`);
      keys.add(JSON.stringify(p.CodeUri.Key));
      roles.add(JSON.stringify(p.Role));
    }
    assert.equal(keys.size, 3, 'each function has its own code asset');
    assert.equal(roles.size, 3, 'each function has its own role');
  });

  it('passes the fixed environment to the functions', () => {
    template.hasResourceProperties('AWS::Serverless::Function', {
      Environment: {
        Variables: Match.objectLike({
          REALTIME_QUEUE_URL: { Ref: 'RealtimeQueue' },
          BATCH_QUEUE_URL: { Ref: 'BatchQueue' },
          DLQ_URL: { Ref: 'DeadLetterQueue' },
          LEDGER_TABLE: { Ref: 'LedgerTable' },
          WEBHOOK_SECRET_ARN: { Ref: 'WebhookSecret' },
          SERVICENOW_SECRET_ARN: { Ref: 'ServiceNowSecret' },
          FAILURE_TOPIC_ARN: { Ref: 'FailureTopic' },
          METRICS_NAMESPACE: { Ref: 'MetricsNamespace' },
        }),
      },
    });
  });

  it('consumes the realtime and critical queues with partial batch failures and capped concurrency each', () => {
    template.hasResourceProperties('AWS::Serverless::Function', {
      Events: Match.objectLike({
        RealtimeQueue: {
          Type: 'SQS',
          Properties: Match.objectLike({
            FunctionResponseTypes: ['ReportBatchItemFailures'],
            ScalingConfig: { MaximumConcurrency: { Ref: 'DeliverMaximumConcurrency' } },
          }),
        },
        CriticalQueue: {
          Type: 'SQS',
          Properties: Match.objectLike({
            Queue: { 'Fn::GetAtt': 'CriticalQueue.Arn' },
            FunctionResponseTypes: ['ReportBatchItemFailures'],
            ScalingConfig: { MaximumConcurrency: { Ref: 'CriticalMaximumConcurrency' } },
          }),
        },
      }),
      Environment: { Variables: Match.objectLike({ CRITICAL_QUEUE_URL: { Ref: 'CriticalQueue' } }) },
    });
  });

  it('encrypts every queue and redrives the work queues to dead-letter queues', () => {
    const queues = template.findResources('AWS::SQS::Queue');
    assert.equal(Object.keys(queues).length, 5);
    for (const [id, q] of Object.entries(queues)) {
      assert.equal(q.Properties.SqsManagedSseEnabled, true, `${id} SSE`);
    }
    const redriveTargets = Object.values(queues)
      .map((q) => getAttTarget(q.Properties.RedrivePolicy?.deadLetterTargetArn))
      .filter((t) => t !== undefined)
      .sort();
    assert.deepEqual(redriveTargets, ['BatchDeadLetterQueue.Arn', 'DeadLetterQueue.Arn', 'DeadLetterQueue.Arn']);
    assert.equal(queues.RealtimeQueue.Properties.MessageRetentionPeriod, 345600);
    assert.equal(queues.CriticalQueue.Properties.MessageRetentionPeriod, 345600);
    assert.equal(queues.DeadLetterQueue.Properties.MessageRetentionPeriod, 1209600);
  });

  it('keeps an on-demand, encrypted, recoverable ledger with TTL', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      BillingMode: 'PAY_PER_REQUEST',
      KeySchema: [{ AttributeName: 'alert_id', KeyType: 'HASH' }],
      TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      SSESpecification: { SSEEnabled: true },
    });
  });

  it('alarms on the dead-letter queue to the failure topic', () => {
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm')).map((a) => a.Properties);
    for (const dlq of ['DeadLetterQueue', 'BatchDeadLetterQueue']) {
      const alarm = alarms.find(
        (a) =>
          a.MetricName === 'ApproximateNumberOfMessagesVisible' &&
          (a.Dimensions ?? []).some((d: { Name: string; Value: unknown }) => getAttTarget(d.Value) === `${dlq}.QueueName`),
      );
      assert.ok(alarm, `no depth alarm on ${dlq}`);
      assert.deepEqual(alarm.AlarmActions, [{ Ref: 'FailureTopic' }]);
    }
    template.resourceCountIs('AWS::Logs::QueryDefinition', 4);
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });

  it('gives every log group a retention', () => {
    for (const [id, g] of Object.entries(template.findResources('AWS::Logs::LogGroup'))) {
      assert.deepEqual(g.Properties.RetentionInDays, { Ref: 'LogRetentionDays' }, id);
    }
  });
});

describe('AlertRelayStack without built functions', () => {
  it('fails with a message that says how to build them', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'alert-relay-cdk-empty-'));
    try {
      assert.throws(
        () => new AlertRelayStack(new App(), 'unbuilt', { lambdaBuildDir: empty }),
        /ingest\/bootstrap not found: build the functions first \(cargo lambda build --release --arm64/,
      );
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });

  it('fails clearly when the template has no such function', () => {
    const dir = fakeBuildDir();
    const bad = path.join(dir, 'template.yaml');
    fs.writeFileSync(bad, 'Resources:\n  IngestFunction:\n    Type: AWS::SQS::Queue\n');
    try {
      assert.throws(
        () => new AlertRelayStack(new App(), 'bad', { lambdaBuildDir: dir, templateFile: bad }),
        /IngestFunction in .* is not an AWS::Serverless::Function/,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
