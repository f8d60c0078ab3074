package sqsqueue

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
)

func TestFitAttributes(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	errText := strings.Repeat("é", 1000) // two bytes a character
	all := []string{AttrError, AttrReason, AttrSourceQueue, AttrDeadLetteredAt, AttrOriginalMessageID, AttrReceiveCount}
	reasonOnly := len(AttrReason) + len("String") + len("bad_message")
	tests := []struct {
		name     string
		body     int
		wantKeep []string
		wantCut  bool
	}{
		{name: "fits", body: 1000, wantKeep: all},
		{name: "the error text is cut", body: limit - 1500, wantKeep: all, wantCut: true},
		{name: "only the reason fits", body: limit - reasonOnly, wantKeep: []string{AttrReason}},
		{name: "nothing fits but the body", body: limit, wantKeep: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat("b", tt.body)
			attrs := DeadLetterAttributes("bad_message", errText, "id-1", 3, "https://sqs/q", time.Unix(0, 0))
			fitAttributes(body, attrs, limit)
			assert.LessOrEqual(t, messageSize(body, attrs), limit)
			var keys []string
			for k := range attrs {
				keys = append(keys, k)
			}
			assert.ElementsMatch(t, tt.wantKeep, keys)
			if e, ok := attrs[AttrError]; ok {
				text := aws.ToString(e.StringValue)
				assert.True(t, utf8.ValidString(text), "the cut never splits a character")
				assert.Equal(t, tt.wantCut, strings.HasSuffix(text, "…"))
			}
		})
	}
}
