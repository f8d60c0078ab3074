package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/socialdata/enricher/consumer"
)

func TestCombine(t *testing.T) {
	t.Parallel()
	plain := errors.New("timeout")
	perm := consumer.Permanent(consumer.ReasonSchemaMismatch, errors.New("bad schema"))
	after := consumer.RetryAfter(time.Minute, errors.New("429"))
	tests := []struct {
		name  string
		give  []error
		want  consumer.Class
		wait  time.Duration
		cause error
	}{
		{name: "none", give: nil, want: consumer.ClassNone},
		{name: "one keeps its class", give: []error{perm}, want: consumer.ClassPermanent},
		{name: "all permanent: dead-letter", give: []error{perm, perm}, want: consumer.ClassPermanent},
		{name: "a passing one: retry", give: []error{perm, plain}, want: consumer.ClassRetry, cause: plain},
		{name: "a known wait wins over a plain retry", give: []error{plain, after}, want: consumer.ClassRetryAfter, wait: time.Minute},
		{name: "and over a permanent one", give: []error{perm, after}, want: consumer.ClassRetryAfter, wait: time.Minute},
		{name: "a halt wins", give: []error{plain, consumer.Halt(errors.New("401")), perm}, want: consumer.ClassHalt},
		{name: "a cancellation stays visible", give: []error{perm, context.Canceled}, want: consumer.ClassRetry, cause: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := combine(tt.give)
			c, w := consumer.Classify(err)
			assert.Equal(t, tt.want, c, "%v", err)
			assert.Equal(t, tt.wait, w)
			if tt.cause != nil {
				assert.ErrorIs(t, err, tt.cause)
			}
			if tt.want == consumer.ClassRetry || tt.want == consumer.ClassRetryAfter {
				_, isPerm := consumer.IsPermanent(err)
				assert.False(t, isPerm, "a retry is not read as a dead-letter")
			}
		})
	}
}
