package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sqsqueue"
)

func newDLQCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect the dead-letter queue and move its messages back to the source queue",
		Long: `dlq gathers the operators' dead-letter tools: stats counts the messages of the
dead-letter queue (DLQ) and tells the age of the oldest, peek shows messages
with why they are there, redrive moves them back to the source queue.

Every subcommand takes the source queue with --queue-url (default
$` + envQueueURL + `) and finds its DLQ in the queue's RedrivePolicy, unless
--dlq-url names it. The SQS endpoint, region and credentials come from the
standard AWS settings, as for run.

Why a message is in the DLQ is its reason: bad_message, unknown_table,
unknown_job, table_not_found, snapshot_not_found, schema_mismatch,
history_diverged (the consumer dead-lettered it at once, and says why in its
enricher-reason and enricher-error attributes) or max_receives (it failed
maxReceiveCount times and the queue's redrive policy moved it).

SQS lets one read a queue only by receiving from it: stats, peek and redrive
hide the messages they hold from other readers while they run, release the
ones they do not move as soon as they are done, and each look increments the
messages' receive count.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newDLQStatsCmd(g), newDLQPeekCmd(g), newDLQRedriveCmd(g))
	return cmd
}

// dlqQueues are the queue flags every dlq subcommand takes.
type dlqQueues struct {
	queue, dlq string
	// sourceURL is --queue-url or $ENRICHER_QUEUE_URL, derived by
	// validate when it is needed.
	sourceURL string
}

func (q *dlqQueues) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&q.queue, "queue-url", "", "source queue URL (default $"+envQueueURL+")")
	f.StringVar(&q.dlq, "dlq-url", "", "dead-letter queue URL (default: from the source queue's RedrivePolicy)")
}

// validate finds the source queue's URL when it is needed: with
// needQueue, or to find the DLQ when --dlq-url is not given.
func (q *dlqQueues) validate(needQueue bool) error {
	if !needQueue && q.dlq != "" {
		return nil
	}
	url, err := queueURL(q.queue)
	if err != nil {
		return err
	}
	q.sourceURL = url
	return nil
}

// connect connects to SQS and returns the DLQ's URL: --dlq-url, else the
// one in the source queue's RedrivePolicy.
func (q *dlqQueues) connect(ctx context.Context) (*sqs.Client, string, error) {
	api, err := newSQSClient(ctx)
	if err != nil {
		return nil, "", err
	}
	dlq := q.dlq
	if dlq == "" {
		if dlq, err = sqsqueue.DLQURLOf(ctx, api, q.sourceURL); err != nil {
			return nil, "", err
		}
	}
	return api, dlq, nil
}

// dlqStatsCmd is `enricher dlq stats`.
type dlqStatsCmd struct {
	cmdBase
	q dlqQueues
}

func newDLQStatsCmd(g *globals) *cobra.Command {
	c := &dlqStatsCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "stats [--queue-url URL] [--dlq-url URL]",
		Short: "Count the dead-letter queue's messages and tell the age of the oldest",
		Long: `stats prints the approximate counts of the dead-letter queue (visible, in flight,
delayed), the age of its oldest message, when the oldest was dead-lettered, the
queue's retention period, and the reasons of the messages.

SQS reports message ages only through CloudWatch, so stats samples: it receives
up to 100 messages, reads their timestamps and reasons, and releases them at
once. The age and the reasons are those of the sampled messages, exact when
the DLQ holds at most 100. Sampling increments the receive count of the
messages it reads and moves nothing.`,
		Example: `  enricher dlq stats --queue-url "$QUEUE"`,
		Args:    cobra.NoArgs,
		RunE:    runE(c),
	}
	c.q.flags(cmd)
	return cmd
}

func (c *dlqStatsCmd) Validate() error { return c.q.validate(false) }

// Run samples the DLQ and prints its counts.
func (c *dlqStatsCmd) Run(ctx context.Context) error {
	api, dlq, err := c.q.connect(ctx)
	if err != nil {
		return err
	}
	st, err := sqsqueue.DLQStats(ctx, api, dlq)
	if err != nil {
		return err
	}
	printDLQStats(c.g.stdout, dlq, st, time.Now())
	return nil
}

func printDLQStats(w io.Writer, dlq string, st sqsqueue.Stats, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "dead-letter queue\t%s\n", dlq)
	fmt.Fprintf(tw, "visible\t%d\n", st.Visible)
	fmt.Fprintf(tw, "in flight\t%d\n", st.InFlight)
	fmt.Fprintf(tw, "delayed\t%d\n", st.Delayed)
	if st.Sampled == 0 {
		fmt.Fprintf(tw, "oldest message\t-\n")
	} else {
		fmt.Fprintf(tw, "oldest message\t%s old (sent %s)\n", dlqAge(st.OldestAge), st.OldestSentAt.UTC().Format(time.RFC3339))
		fmt.Fprintf(tw, "oldest dead-lettered\t%s ago (%s)\n", dlqAge(now.Sub(st.OldestDeadLetteredAt)), st.OldestDeadLetteredAt.UTC().Format(time.RFC3339))
	}
	if st.Retention > 0 {
		line := dlqAge(st.Retention)
		if st.Sampled > 0 && st.Retention > st.OldestAge {
			line += fmt.Sprintf(" (the oldest message expires in about %s)", dlqAge(st.Retention-st.OldestAge))
		}
		fmt.Fprintf(tw, "retention\t%s\n", line)
	}
	if st.Sampled > 0 {
		fmt.Fprintf(tw, "reasons\t%s (of %d sampled)\n", dlqByReason(st.ByReason), st.Sampled)
	}
	tw.Flush()
}

// dlqPeekCmd is `enricher dlq peek`.
type dlqPeekCmd struct {
	cmdBase
	q dlqQueues

	limit   int
	reasons []string
	format  string
}

func newDLQPeekCmd(g *globals) *cobra.Command {
	c := &dlqPeekCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "peek [--max N] [--reason R,...] [--format text|jsonl]",
		Short: "Show dead-lettered messages with their reason, without removing them",
		Long: `peek prints up to --max messages of the dead-letter queue (0: all it can see)
with their id, reason, error, receive count, when they were dead-lettered and
their body; --reason shows only the messages with one of the reasons given.
--format text prints one block per message, --format jsonl one JSON object per
line.

peek removes nothing: it receives the messages with a short visibility timeout
and releases them (visibility 0) once it has read them; should it die, they
come back by themselves within 30 seconds. Peeking increments each message's
receive count (the count printed includes this look; "before" is how many times
the consumer had received it before dead-lettering it).`,
		Example: `  enricher dlq peek --queue-url "$QUEUE" --max 5
  enricher dlq peek --reason bad_message,unknown_table --format jsonl | jq .body`,
		Args: cobra.NoArgs,
		RunE: runE(c),
	}
	c.q.flags(cmd)
	f := cmd.Flags()
	f.IntVar(&c.limit, "max", 10, "messages to show at most (0: all)")
	f.StringSliceVar(&c.reasons, "reason", nil, "show only messages with these reasons (comma-separated or repeated)")
	choiceVar(f, &c.format, "format", "output format: text (one block per message) or jsonl", "text", "jsonl")
	return cmd
}

func (c *dlqPeekCmd) Validate() error {
	if c.limit < 0 {
		return fmt.Errorf("%w: --max must not be negative, got %d", errUsage, c.limit)
	}
	return c.q.validate(false)
}

// Run prints the messages it can see and releases them.
func (c *dlqPeekCmd) Run(ctx context.Context) error {
	api, dlq, err := c.q.connect(ctx)
	if err != nil {
		return err
	}
	msgs, err := sqsqueue.PeekDLQ(ctx, api, dlq, c.limit, c.reasons)
	if err != nil {
		return err
	}
	out := c.g.stdout
	if c.format == "jsonl" {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		for _, m := range msgs {
			if err := enc.Encode(dlqJSON(m)); err != nil {
				return fmt.Errorf("peek: %w", err)
			}
		}
		return nil
	}
	for _, m := range msgs {
		printDeadLetter(out, m)
	}
	switch {
	case len(msgs) == 0 && len(c.reasons) > 0:
		fmt.Fprintf(out, "no message with reason %s in %s\n", strings.Join(c.reasons, " or "), dlq)
	case len(msgs) == 0:
		fmt.Fprintf(out, "no message in %s\n", dlq)
	default:
		fmt.Fprintf(out, "%d message(s) shown\n", len(msgs))
	}
	return nil
}

// deadLetterJSON is one line of peek --format jsonl.
type deadLetterJSON struct {
	ID                 string            `json:"id"`
	Reason             string            `json:"reason"`
	Error              string            `json:"error,omitempty"`
	ReceiveCount       int               `json:"receive_count"`
	SourceReceiveCount *int              `json:"source_receive_count,omitempty"`
	DeadLetteredAt     *time.Time        `json:"dead_lettered_at,omitempty"`
	SentAt             *time.Time        `json:"sent_at,omitempty"`
	GroupID            string            `json:"group_id,omitempty"`
	SourceQueue        string            `json:"source_queue,omitempty"`
	OriginalMessageID  string            `json:"original_message_id,omitempty"`
	Attributes         map[string]string `json:"attributes,omitempty"`
	Body               string            `json:"body"`
}

func dlqJSON(m consumer.DeadLetter) deadLetterJSON {
	j := deadLetterJSON{ID: m.ID, Reason: m.Reason, Error: m.Error, ReceiveCount: m.ReceiveCount, GroupID: m.GroupID,
		SourceQueue: m.Attributes[sqsqueue.AttrSourceQueue], OriginalMessageID: m.Attributes[sqsqueue.AttrOriginalMessageID],
		Body: string(m.Body)}
	if n, err := strconv.Atoi(m.Attributes[sqsqueue.AttrReceiveCount]); err == nil {
		j.SourceReceiveCount = &n
	}
	if !m.At.IsZero() {
		at := m.At.UTC()
		j.DeadLetteredAt = &at
	}
	if !m.SentAt.IsZero() {
		at := m.SentAt.UTC()
		j.SentAt = &at
	}
	for k, v := range m.Attributes {
		if !strings.HasPrefix(k, "enricher-") {
			if j.Attributes == nil {
				j.Attributes = map[string]string{}
			}
			j.Attributes[k] = v
		}
	}
	return j
}

func printDeadLetter(w io.Writer, m consumer.DeadLetter) {
	j := dlqJSON(m)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\n", j.ID)
	fmt.Fprintf(tw, "reason\t%s\n", j.Reason)
	if j.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", dlqOneLine(j.Error))
	}
	count := strconv.Itoa(j.ReceiveCount)
	if j.SourceReceiveCount != nil {
		count += fmt.Sprintf(" (%d before)", *j.SourceReceiveCount)
	}
	fmt.Fprintf(tw, "receive count\t%s\n", count)
	if j.DeadLetteredAt != nil {
		fmt.Fprintf(tw, "dead-lettered at\t%s\n", j.DeadLetteredAt.Format(time.RFC3339Nano))
	} else if j.SentAt != nil {
		fmt.Fprintf(tw, "dead-lettered at\t- (sent %s)\n", j.SentAt.Format(time.RFC3339Nano))
	}
	if j.GroupID != "" {
		fmt.Fprintf(tw, "group\t%s\n", j.GroupID)
	}
	if j.SourceQueue != "" {
		fmt.Fprintf(tw, "source queue\t%s\n", j.SourceQueue)
	}
	keys := make([]string, 0, len(j.Attributes))
	for k := range j.Attributes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "attribute %s\t%s\n", k, dlqOneLine(j.Attributes[k]))
	}
	tw.Flush()
	fmt.Fprintf(w, "body\n%s\n\n", strings.TrimRight(j.Body, "\n"))
}

// dlqOneLine keeps a value on its line.
func dlqOneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`, "\t", `\t`).Replace(s)
}

// dlqRedriveCmd is `enricher dlq redrive`.
type dlqRedriveCmd struct {
	cmdBase
	q dlqQueues

	limit   int
	reasons []string
	dryRun  bool
	yes     bool

	stdin io.Reader // where the confirmation is read
}

func newDLQRedriveCmd(g *globals) *cobra.Command {
	c := &dlqRedriveCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "redrive [--max N] [--reason R,...] [--dry-run] [--yes]",
		Short: "Move dead-lettered messages back to the source queue",
		Long: `redrive moves the messages of the dead-letter queue back to the source queue,
so that the consumer tries them again: all of them, at most --max, or only
those whose reason is one of --reason (the others stay in the DLQ, untouched).
--dry-run counts what would move and moves nothing. Without --yes, redrive
asks first.

To move everything, redrive first asks SQS to start a message move task: SQS
then moves the messages in the background, and redrive prints the task handle
and returns at once. Where SQS has no such task (an emulator, say), and always
with --max, --reason or --dry-run, redrive moves the messages itself, showing
its progress on stderr: for each message it sends the body and message
attributes (less the enricher-* ones, which say why it was dead-lettered) to
the source queue, and deletes it from the DLQ only after the send succeeded.
Into a FIFO queue a message keeps its message group (or takes the table of its
event).

An interrupted redrive (Ctrl-C, a crash, a network error) loses nothing:
nothing is deleted before it was sent, so at worst a message is in both queues,
and a message processed twice is harmless because processing is idempotent.
Run redrive again to move the rest. Reading the DLQ increments the messages'
receive counts.`,
		Example: `  enricher dlq redrive --queue-url "$QUEUE" --dry-run
  enricher dlq redrive --queue-url "$QUEUE" --reason snapshot_not_found --yes
  enricher dlq redrive --queue-url "$QUEUE" --max 10 --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c.stdin = cmd.InOrStdin()
			return runE(c)(cmd, args)
		},
	}
	c.q.flags(cmd)
	f := cmd.Flags()
	f.IntVar(&c.limit, "max", 0, "messages to move at most (0: all)")
	f.StringSliceVar(&c.reasons, "reason", nil, "move only messages with these reasons (comma-separated or repeated)")
	f.BoolVar(&c.dryRun, "dry-run", false, "count what would move, move nothing")
	f.BoolVar(&c.yes, "yes", false, "do not ask for confirmation")
	return cmd
}

func (c *dlqRedriveCmd) Validate() error {
	if c.limit < 0 {
		return fmt.Errorf("%w: --max must not be negative, got %d", errUsage, c.limit)
	}
	return c.q.validate(true)
}

// Run asks (without --yes or --dry-run), then moves the messages or
// starts a message move task, and prints what moved.
func (c *dlqRedriveCmd) Run(ctx context.Context) error {
	api, dlq, err := c.q.connect(ctx)
	if err != nil {
		return err
	}
	queue, out := c.q.sourceURL, c.g.stdout
	depth, err := sqsqueue.QueueDepth(ctx, api, dlq)
	if err != nil {
		return err
	}
	if !c.dryRun && !c.yes {
		if err := confirmRedrive(c.stdin, c.g.stderr, depth, c.limit, c.reasons, dlq, queue); err != nil {
			return err
		}
	}
	total := depth.Visible
	if c.limit > 0 && len(c.reasons) == 0 {
		total = min(total, c.limit)
	}
	prog := newRedriveProgress(c.g.stderr, total, c.dryRun)
	res, err := sqsqueue.Redrive(ctx, api, sqsqueue.RedriveOptions{
		DLQURL: dlq, QueueURL: queue, Max: c.limit, Reasons: c.reasons, DryRun: c.dryRun, Progress: prog.update,
	})
	prog.finish()
	if res.MoveTask != nil {
		t := res.MoveTask
		fmt.Fprintf(out, "started message move task %s: SQS moves the messages from %s to %s in the background\n",
			t.Handle, t.SourceArn, t.DestinationArn)
		fmt.Fprintf(out, "follow it with: aws sqs list-message-move-tasks --source-arn %s\n", t.SourceArn)
		return err
	}
	summary := redriveSummary(res, c.dryRun)
	if err != nil {
		fmt.Fprintln(out, "interrupted: "+summary)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("redrive interrupted after moving %d message(s); nothing is lost, run it again to move the rest: %w", res.Moved, err)
		}
		return err
	}
	fmt.Fprintln(out, summary)
	return nil
}

// confirmRedrive asks on stderr and reads the answer from in.
func confirmRedrive(in io.Reader, out io.Writer, depth sqsqueue.Depth, limit int, reasons []string, dlq, queue string) error {
	what := fmt.Sprintf("about %d message(s)", depth.Visible)
	if limit > 0 {
		what = fmt.Sprintf("up to %d of %s", limit, what)
	}
	if len(reasons) > 0 {
		what += " with reason " + strings.Join(reasons, " or ")
	}
	fmt.Fprintf(out, "move %s from %s back to %s? [y/N] ", what, dlq, queue)
	answer, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("redrive: read the confirmation: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	if answer == "" {
		fmt.Fprintln(out)
	}
	return errors.New("redrive not confirmed, nothing moved (pass --yes to skip the question)")
}

func redriveSummary(res sqsqueue.RedriveResult, dryRun bool) string {
	verb := "moved"
	if dryRun {
		verb = "dry run: would move"
	}
	s := fmt.Sprintf("%s %d, left %d (filtered)", verb, res.Moved, res.Skipped)
	if len(res.ByReason) > 0 {
		s += "; by reason: " + dlqByReason(res.ByReason)
	}
	if dryRun {
		s += "; nothing was moved"
	}
	return s
}

// dlqByReason is "bad_message 2, max_receives 1".
func dlqByReason(by map[string]int) string {
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, by[k])
	}
	return strings.Join(parts, ", ")
}

// dlqAge is a duration for people: 45s, 12m03s, 5h07m, 3d04h.
func dlqAge(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// redriveProgress shows a redrive's progress on stderr: a progress bar on
// a terminal, else a plain line at most every second.
type redriveProgress struct {
	w       io.Writer
	bar     *progressbar.ProgressBar
	verb    string
	max     int
	last    time.Time
	moved   int
	skipped int
	shown   [2]int // moved and skipped as last printed
}

func newRedriveProgress(w io.Writer, total int, dryRun bool) *redriveProgress {
	p := &redriveProgress{w: w, verb: "moved", max: total}
	if dryRun {
		p.verb = "would move"
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if p.max <= 0 {
			p.max = -1 // unknown: a spinner
		}
		p.bar = progressbar.NewOptions(p.max, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("redrive"),
			progressbar.OptionShowCount(), progressbar.OptionSetItsString("msg"), progressbar.OptionShowIts(),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	return p
}

// update is the sqsqueue.RedriveOptions.Progress callback.
func (p *redriveProgress) update(moved, skipped int) {
	p.moved, p.skipped = moved, skipped
	if p.bar != nil {
		if n := moved + skipped; p.max > 0 && n > p.max {
			p.max = n
			p.bar.ChangeMax(n)
		}
		p.bar.Describe(fmt.Sprintf("redrive: %s %d, left %d", p.verb, moved, skipped))
		_ = p.bar.Set(moved + skipped) // a progress bar that cannot draw is no reason to stop
		return
	}
	if now := time.Now(); now.Sub(p.last) >= time.Second {
		p.last = now
		p.print()
	}
}

func (p *redriveProgress) print() {
	p.shown = [2]int{p.moved, p.skipped}
	fmt.Fprintf(p.w, "redrive: %s %d, left %d (filtered)\n", p.verb, p.moved, p.skipped)
}

// finish ends the bar, or prints the last plain line.
func (p *redriveProgress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		return
	}
	if p.shown != [2]int{p.moved, p.skipped} {
		p.print()
	}
}
