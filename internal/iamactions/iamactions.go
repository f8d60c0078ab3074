// Package iamactions is the one list of the IAM actions the consumer
// (enricher run on Fargate, the Lambda handler) needs on the warehouse
// bucket and the Glue catalog. The CDK app (infra) grants exactly these,
// and cmd/enricher's tests record the S3 and Glue requests that the
// commands make against emulators and check them against the same lists,
// so a code path that starts calling something new fails a test before it
// gets a 403 in AWS. It also names the Lambda actions with which the
// function pauses its own event source on a halt (PauseEventSource; the
// Lambda handler's tests check those calls against a fake of the API).
//
// It imports nothing: infra may import it without importing the runtime
// (internal/arch checks that).
package iamactions

// WarehouseObjects are the S3 actions on the objects under the warehouse
// prefix: read and write table files (multipart uploads of big data files
// included), and delete them (a lost commit's files, snapshot expiry,
// compaction, orphan cleanup after a commit and enricher orphans --delete).
func WarehouseObjects() []string {
	return []string{"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
}

// WarehouseBucket are the S3 actions on the bucket itself, which the
// stack limits to the warehouse prefix (s3:prefix condition): listing a
// table's folder finds orphaned files.
func WarehouseBucket() []string {
	return []string{"s3:ListBucket"}
}

// Unexercised are granted actions that the recorded tests cannot make
// happen, with the reason: each must still be justified.
func Unexercised() map[string]string {
	return map[string]string{
		"s3:AbortMultipartUpload": "the S3 client aborts a multipart upload whose part failed; the emulator never fails one",
	}
}

// GlueCatalog are the Glue actions on the catalog, the Glue database (the
// Iceberg namespace) and its tables: iceberg-go's Glue catalog reads the
// database (its location is where new tables go) and the tables, creates
// a target table when missing, and commits by UpdateTable with the
// table's version (optimistic locking). CreateDatabase lets "create the
// namespace when missing" find the stack's database already there. No
// delete: the consumer never drops a table or a database.
func GlueCatalog() []string {
	return []string{"glue:GetDatabase", "glue:CreateDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"}
}

// PauseEventSource are the Lambda actions with which the consumer
// function stops its own event source mapping on a halt: listing takes no
// resource (ListEventSourceMappings, by function and queue), the update
// is granted on the mapping alone.
func PauseEventSource() (list, update string) {
	return "lambda:ListEventSourceMappings", "lambda:UpdateEventSourceMapping"
}
