package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// choice is a string flag that takes one of a few values: another value is
// refused when the command line is parsed, with the values it takes.
type choice struct {
	value  *string
	values []string
}

// choiceVar binds the flag name to p, which starts as the first of values.
func choiceVar(f *pflag.FlagSet, p *string, name, usage string, values ...string) {
	*p = values[0]
	f.Var(choice{p, values}, name, usage)
}

func (c choice) String() string { return *c.value }

func (c choice) Type() string { return strings.Join(c.values, "|") }

func (c choice) Set(v string) error {
	if !slices.Contains(c.values, v) {
		return fmt.Errorf("want %s", orList(c.values))
	}
	*c.value = v
	return nil
}

// byteSize is a flag of bytes written as 4096, 64KiB, 256MiB, 1GiB (or
// KB, MB, GB in powers of ten).
type byteSize int64

func (b *byteSize) String() string {
	if *b == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*b), 10)
}

func (b *byteSize) Type() string { return "size" }

func (b *byteSize) Set(v string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("%q is not a size such as 4096, 256MiB or 1GB", v)
	}
	*b = byteSize(n * mult)
	return nil
}
