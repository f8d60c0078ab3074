package main

import (
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// suppress silences one cdk-nag AwsSolutions rule on one construct and its
// children (a role's default policy is its child), with the reason in one
// line. appliesTo narrows an IAM wildcard finding (AwsSolutions-IAM5) to
// the very resources or actions named, as cdk-nag prints them
// ("Resource::<Warehouse50B5FE91.Arn>/warehouse/*"), a string or a
// *cdknag.RegexAppliesTo: any other wildcard on the same construct is still
// an error.
func suppress(c constructs.IConstruct, rule, reason string, appliesTo ...any) {
	sup := &cdknag.NagPackSuppression{Id: jsii.String(rule), Reason: jsii.String(reason)}
	if len(appliesTo) > 0 {
		sup.AppliesTo = &appliesTo
	}
	cdknag.NagSuppressions_AddResourceSuppressions(c, &[]*cdknag.NagPackSuppression{sup}, jsii.Bool(true))
}

// logicalIDFinding matches how cdk-nag names an attribute of a resource
// whose logical id starts with prefix: <Prefix1A2B3C4D.Attribute>.
func logicalIDFinding(prefix string) string { return "<" + prefix + "[0-9A-F]{8}" }
