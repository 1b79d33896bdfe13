#!/usr/bin/env node
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { AlertRelayStack, REPO_ROOT } from '../lib/alert-relay-stack';

const app = new App();
const lambdaBuildDir = path.resolve(
  (app.node.tryGetContext('lambdaBuildDir') as string | undefined) ?? path.join(REPO_ROOT, 'target', 'lambda'),
);
new AlertRelayStack(app, (app.node.tryGetContext('stackName') as string | undefined) ?? 'alert-relay', {
  lambdaBuildDir,
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  description: 'Alert relay: employee-monitoring alert webhooks to ServiceNow (from template.yaml)',
});
