package storage_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/apache/iceberg-go/table"

	"github.com/socialdata/enricher/storage"
)

// BenchmarkCommitAfter measures one event's commit to a target (an
// AppendChunk of 10 rows, then ExpireSnapshots where the variant expires)
// after `after` commits, with no compaction in between:
//
//	go test -run '^$' -bench CommitAfter -benchtime 200x ./storage/
//
// Variants: bare (no properties, no expiry: the enricher before issue
// 12), defaults (TargetProperties and the per-commit expiry), the
// defaults with an expiry commit after every commit instead of every
// DefaultExpireBatch, and the defaults with manifest merging off or at
// another min-count-to-merge, which is how DefaultManifestMinMergeCount
// was chosen. Besides ns/op it
// reports the table's metadata.json bytes, snapshots and manifests at the
// end.
func BenchmarkCommitAfter(b *testing.B) {
	with := func(k, v string) map[string]string {
		p := storage.TargetProperties()
		p[k] = v
		return p
	}
	variants := []struct {
		name        string
		props       map[string]string
		expire      bool
		expireBatch int
	}{
		{"bare", nil, false, 0},
		{"defaults", storage.TargetProperties(), true, 0},
		{"defaults-expire-each-commit", storage.TargetProperties(), true, 1},
		{"defaults-merge-off", with(table.ManifestMergeEnabledKey, "false"), true, 0},
		{"defaults-merge-5", with(table.ManifestMinMergeCountKey, "5"), true, 0},
		{"defaults-merge-100", with(table.ManifestMinMergeCountKey, strconv.Itoa(table.ManifestMinMergeCountDefault)), true, 0},
	}
	for _, after := range []int{100, 1000} {
		for _, v := range variants {
			b.Run(fmt.Sprintf("after=%d/%s", after, v.name), func(b *testing.B) {
				c := newCommitter(b, v.props, v.expire)
				c.expireBatch = v.expireBatch
				for range after {
					c.commit()
				}
				for b.Loop() {
					c.commit()
				}
				h := c.health()
				b.ReportMetric(float64(h.MetadataBytes), "metadata-B")
				b.ReportMetric(float64(h.Snapshots), "snapshots")
				b.ReportMetric(float64(h.Manifests), "manifests")
			})
		}
	}
}
