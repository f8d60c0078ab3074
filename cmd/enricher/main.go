// Command enricher enriches the rows that new snapshots append to Apache
// Iceberg tables with a language model, exactly once. Run `enricher --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer/pipeline"
)

func main() {
	ctx, stop := signalContext()
	var err error
	if inLambda() && len(os.Args) == 1 {
		err = runLambda(ctx)
	} else {
		err = newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "enricher:", err)
		os.Exit(1)
	}
}

// signalContext is the context of the process: the first SIGINT or
// SIGTERM cancels it, so that work in flight ends cleanly (run's
// --shutdown-grace); a second one exits at once with status 128+signal,
// for work that cannot see the first (blocked in a system call, such as
// opening a FIFO nobody writes to) or that an operator will not wait
// for. stop ends the watch.
func signalContext() (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { // ends at stop, or exits the process
		select {
		case s := <-sigs:
			cancel(fmt.Errorf("%v received: %w", s, context.Canceled))
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "enricher: %v received again: exiting now\n", s)
			code := 1
			if n, ok := s.(syscall.Signal); ok {
				code = 128 + int(n)
			}
			os.Exit(code)
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel(nil)
		})
	}
}

// globals are the flags every subcommand takes.
type globals struct {
	config    string
	logLevel  string
	logFormat string
	stdout    io.Writer
	stderr    io.Writer
	// model holds the model flags of the subcommands that take them.
	model *modelFlags
	// log is the subcommand's logger (runE builds it): models log to it.
	log *slog.Logger
	// create lets the subcommand create a missing sqlite catalog file and
	// warehouse folder (ingest); every other one refuses them.
	create bool
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.AddCommand(newDemoCmd(g), newIngestCmd(g), newExportCmd(g), newValidateCmd(g), newRunCmd(g), newPublishCmd(g), newStatusCmd(g), newDLQCmd(g), newReplayCmd(g))
	root.AddCommand(newOrphansCmd(g), newMaintainCmd(g), newResyncCmd(g), newBatchesCmd(g))
	return root
}

// newRoot is the root command, with the flags every subcommand takes bound
// to g, and no subcommands yet.
func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "enricher",
		Short: "Enrich the rows new Iceberg snapshots append, with a language model, exactly once",
		Long: `enricher reads exactly the rows that new snapshots appended to a source Iceberg
table, asks a model to enrich them (sentiment first: any job spec), validates the
answers and appends the enriched rows to a target Iceberg table, exactly once:
the target's snapshot summary records how far each job has come.

Start with the embedded demo, which needs no network and no accounts:

  enricher demo

Subcommands that touch tables read the runtime config (enricher.yaml, written
by demo) from --config or from the ENRICHER_CONFIG environment variable.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	// A flag that does not parse is an error in the command line, like
	// those Validate finds.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return fmt.Errorf("%w: %w", errUsage, err)
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.config, "config", "", "runtime config file (default $"+envConfig+")")
	pf.StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default info; warn for demo)")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	return root
}

// A command is one subcommand, after riverqueue/river's rivercli: a struct
// that embeds cmdBase, whose other fields are the subcommand's flags (its
// cobra command binds them) and whose two methods are all the cobra command
// calls, through runE.
type command interface {
	// shared is the command's embedded cmdBase.
	shared() *cmdBase
	// Validate checks the flags before anything is touched: errors in the
	// command line itself wrap errUsage. It also derives from the flags
	// what Run needs (a queue URL, a model).
	Validate() error
	// Run does the work.
	Run(ctx context.Context) error
}

// cmdBase is what every command has besides its own flags: the global
// flags, and the logger runE builds from them before Validate.
type cmdBase struct {
	g *globals
	// level is the log level when --log-level is not given (zero: info).
	level slog.Level
	log   *slog.Logger
}

func (b *cmdBase) shared() *cmdBase { return b }

// runE is the RunE of every subcommand: build its logger from --log-level
// and --log-format, Validate, then Run.
func runE(c command) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		b := c.shared()
		log, err := b.g.logger(b.level)
		if err != nil {
			return err
		}
		b.log, b.g.log = log, log
		if err := c.Validate(); err != nil {
			return err
		}
		return c.Run(cmd.Context())
	}
}

// logger builds the logger the flags ask for; def is the level when
// --log-level is not given.
func (g *globals) logger(def slog.Level) (*slog.Logger, error) {
	level := def
	if g.logLevel != "" {
		if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
			return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, g.logLevel)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	default:
		return nil, fmt.Errorf("%w: --log-format %q: want text or json", errUsage, g.logFormat)
	}
}

// loadConfig finds and loads the config of a subcommand.
func (g *globals) loadConfig() (*Config, error) {
	path, err := configPath(g.config)
	if err != nil {
		return nil, err
	}
	return loadConfig(path)
}

// errUsage marks an error in the command line itself.
var errUsage = errors.New("usage")

// open finds the subcommand's config and opens its runtime env.
func (g *globals) open(ctx context.Context, withJobs bool) (*runtimeEnv, error) {
	path, err := configPath(g.config)
	if err != nil {
		return nil, err
	}
	log := g.log
	if log == nil {
		log = slog.Default()
	}
	if err := g.model.validate(); err != nil {
		return nil, err
	}
	return openWith(ctx, path, withJobs, g.create, g.model, log)
}

// openJob opens the runtime env with its jobs, built with the command
// line's model flags mf, and picks the job named job (or the config's only
// one). The caller closes the env.
func (g *globals) openJob(ctx context.Context, mf *modelFlags, job string) (*runtimeEnv, pipeline.Job, error) {
	g.model = mf
	env, err := g.open(ctx, true)
	if err != nil {
		return nil, pipeline.Job{}, err
	}
	j, err := pickJob(env.jobs, job)
	if err != nil {
		env.Close()
		return nil, pipeline.Job{}, err
	}
	return env, j, nil
}
