import * as fs from 'node:fs';
import * as path from 'node:path';
import { Stack, StackProps, aws_s3_assets as assets, aws_sam as sam } from 'aws-cdk-lib';
import * as cfninc from 'aws-cdk-lib/cloudformation-include';
import { Construct } from 'constructs';

/** The repository root, where template.yaml and the Cargo workspace live. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');

/** Logical id in template.yaml -> binary name of the function (a bin crate of the Cargo workspace). */
export const FUNCTIONS: Record<string, string> = {
  IngestFunction: 'ingest',
  DeliverFunction: 'deliver',
  FlushFunction: 'flush',
};

export interface AlertRelayStackProps extends StackProps {
  /** The SAM template to deploy; template.yaml at the repository root by default (the one source of truth). */
  readonly templateFile?: string;
  /**
   * Directory holding `<binary>/bootstrap` for each function, as written by
   * `cargo lambda build --release --arm64` (default: `<repo>/target/lambda`).
   */
  readonly lambdaBuildDir: string;
}

/**
 * The alert relay stack for teams that deploy with CDK: template.yaml is included as it is
 * (cloudformation-include keeps the Serverless transform, parameters, mappings, conditions and outputs),
 * and only each function's CodeUri is replaced by a CDK asset of the binary built by cargo-lambda.
 */
export class AlertRelayStack extends Stack {
  public readonly template: cfninc.CfnInclude;

  constructor(scope: Construct, id: string, props: AlertRelayStackProps) {
    super(scope, id, props);
    const templateFile = props.templateFile ?? path.join(REPO_ROOT, 'template.yaml');
    this.template = new cfninc.CfnInclude(this, 'Template', { templateFile });

    for (const [logicalId, binary] of Object.entries(FUNCTIONS)) {
      const dir = path.join(props.lambdaBuildDir, binary);
      if (!fs.existsSync(path.join(dir, 'bootstrap'))) {
        throw new Error(
          `${dir}/bootstrap not found: build the functions first (cargo lambda build --release --arm64 ` +
            `at the repository root, or scripts/sam-build.sh), or pass -c lambdaBuildDir=<dir with ${binary}/bootstrap>`,
        );
      }
      const fn = this.template.getResource(logicalId);
      if (!(fn instanceof sam.CfnFunction)) {
        throw new Error(`${logicalId} in ${templateFile} is not an AWS::Serverless::Function`);
      }
      const code = new assets.Asset(this, `${logicalId}Code`, { path: dir });
      fn.codeUri = { bucket: code.s3BucketName, key: code.s3ObjectKey };
    }
  }
}
