"""Prints template.yaml (or the template named first) as CloudFormation gets it from SAM's transform, in JSON.

Run by the Python that has aws-sam-cli (scripts/test's .venv). It needs no AWS account: the pseudo parameters are
stand-ins, CodeUri is replaced by an S3 location (`sam deploy` uploads the build there), and no managed policy is looked
up (the template names none).
"""

import json
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform


class NoManagedPolicies:
    def load(self):
        return {}


template = yaml_parse(open(sys.argv[1] if len(sys.argv) > 1 else "template.yaml").read())
for resource in template["Resources"].values():
    if resource["Type"] == "AWS::Serverless::Function":
        resource["Properties"]["CodeUri"] = "s3://bucket/key"
pseudo = {"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012"}
sys.stdout.write(json.dumps(transform(template, pseudo, NoManagedPolicies()), indent=1))
