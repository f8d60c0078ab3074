package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sqsqueue"
)

// publishCmd is `enricher publish`, the helper ingestion jobs call after
// they commit.
type publishCmd struct {
	cmdBase

	queue, table, job string
	snapshot          int64

	url string // derived by Validate
}

func newPublishCmd(g *globals) *cobra.Command {
	p := &publishCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "publish --queue-url URL --table NS.TABLE [--snapshot-id ID]",
		Short: "Send the snapshot event for a table's current (or given) snapshot",
		Long: `publish is the helper ingestion jobs call after they commit: it sends the
snapshot event {"version": 1, "table": ..., "snapshot_id": ...} for the table's
current snapshot, or for --snapshot-id, and prints the SQS message id.

On a FIFO queue the message group is the table and the deduplication id is
"TABLE:SNAPSHOT:JOB", so publishing the same event twice within five minutes
sends it once; on any queue a duplicate is harmless (the consumer is
idempotent).`,
		Example: `  enricher publish --config enricher.yaml --queue-url "$QUEUE" --table social.posts`,
		Args:    cobra.NoArgs,
		RunE:    runE(p),
	}
	f := cmd.Flags()
	f.StringVar(&p.queue, "queue-url", "", "queue URL (default $"+envQueueURL+")")
	f.StringVar(&p.table, "table", "", "source table, NAMESPACE.TABLE (required)")
	f.Int64Var(&p.snapshot, "snapshot-id", 0, "snapshot to announce (default: the table's current one, read through --config)")
	f.StringVar(&p.job, "job", "", "limit the event to this job")
	return cmd
}

func (p *publishCmd) Validate() error {
	url, err := queueURL(p.queue)
	if err != nil {
		return err
	}
	if p.table == "" {
		return fmt.Errorf("%w: --table NS.TABLE is required", errUsage)
	}
	p.url = url
	return nil
}

// Run sends the event and prints its message id.
func (p *publishCmd) Run(ctx context.Context) error {
	snapshot := p.snapshot
	if snapshot == 0 {
		var err error
		if snapshot, err = p.currentSnapshot(ctx); err != nil {
			return err
		}
	}
	api, err := newSQSClient(ctx)
	if err != nil {
		return err
	}
	pub := &sqsqueue.Publisher{API: api, QueueURL: p.url}
	id, err := pub.Publish(ctx, consumer.SnapshotEvent{Table: p.table, SnapshotID: snapshot, Job: p.job})
	if err != nil {
		return err
	}
	fmt.Fprintln(p.g.stdout, id)
	return nil
}

// currentSnapshot reads the table's current snapshot through the config.
func (p *publishCmd) currentSnapshot(ctx context.Context) (int64, error) {
	env, err := p.g.open(ctx, false)
	if err != nil {
		return 0, err
	}
	defer env.Close()
	tbl, err := env.cat.LoadTable(ctx, p.table)
	if err != nil {
		return 0, err
	}
	cur := tbl.CurrentSnapshot()
	if cur == nil {
		return 0, fmt.Errorf("table %s has no snapshot yet: nothing to publish", p.table)
	}
	return cur.SnapshotID, nil
}
