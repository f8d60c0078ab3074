package lambdabatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// MappingsAPI is the part of the Lambda API a Handler uses to stop its
// own event source mapping on a halt (*lambda.Client implements it). The
// function's role needs lambda:ListEventSourceMappings (it takes no
// resource) and lambda:UpdateEventSourceMapping on the mapping.
type MappingsAPI interface {
	ListEventSourceMappings(ctx context.Context, in *lambda.ListEventSourceMappingsInput, opts ...func(*lambda.Options)) (*lambda.ListEventSourceMappingsOutput, error)
	UpdateEventSourceMapping(ctx context.Context, in *lambda.UpdateEventSourceMappingInput, opts ...func(*lambda.Options)) (*lambda.UpdateEventSourceMappingOutput, error)
}

var _ MappingsAPI = (*lambda.Client)(nil)

// Paused is what a halt did to the event source mappings of the function
// and the halted batch's queue.
type Paused struct {
	// Disabled are the mappings this halt disabled, Off those it found
	// disabled or being disabled (another invocation halted first), Busy
	// those another change held (ResourceInUseException: most likely
	// another invocation's halt disabling them), which it left alone.
	Disabled, Off, Busy []string
}

// pauseTimeout bounds the Lambda API calls of a halt: the invocation is
// near its margin, and its records are reported failed either way.
const pauseTimeout = 10 * time.Second

// pauseMappings disables every enabled event source mapping from the queue
// sourceARN to the function: Lambda stops polling the queue, so no other
// batch meets the same halt (each receive would count towards the queue's
// maxReceiveCount, and the messages would reach the dead-letter queue as
// max_receives). An operator enables it again once the cause is fixed.
func pauseMappings(ctx context.Context, api MappingsAPI, function, sourceARN string) (Paused, error) {
	var p Paused
	if function == "" || sourceARN == "" {
		return p, fmt.Errorf("pause the event source: the function name (%q) or the queue ARN (%q) is unknown", function, sourceARN)
	}
	// At most pauseTimeout, and never past a second before the
	// invocation's deadline: a timed-out invocation hands the whole batch
	// back, dead-lettered records included.
	limit := pauseTimeout
	if deadline, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(deadline)-time.Second)
	}
	if limit <= 0 {
		return p, fmt.Errorf("pause the event source: no time left before the invocation's deadline")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
	defer cancel()
	var marker *string
	for {
		out, err := api.ListEventSourceMappings(ctx, &lambda.ListEventSourceMappingsInput{
			FunctionName: &function, EventSourceArn: &sourceARN, Marker: marker,
		})
		if err != nil {
			return p, fmt.Errorf("list the event source mappings of %s from %s: %w", function, sourceARN, err)
		}
		for _, m := range out.EventSourceMappings {
			id := aws.ToString(m.UUID)
			switch aws.ToString(m.State) {
			case "Disabled", "Disabling", "Deleting":
				p.Off = append(p.Off, id)
				continue
			}
			_, err := api.UpdateEventSourceMapping(ctx, &lambda.UpdateEventSourceMappingInput{UUID: m.UUID, Enabled: aws.Bool(false)})
			if riu := new(types.ResourceInUseException); errors.As(err, &riu) {
				p.Busy = append(p.Busy, id)
				continue
			}
			if err != nil {
				return p, fmt.Errorf("disable event source mapping %s: %w", id, err)
			}
			p.Disabled = append(p.Disabled, id)
		}
		if out.NextMarker == nil || *out.NextMarker == "" {
			break
		}
		marker = out.NextMarker
	}
	if len(p.Disabled)+len(p.Off)+len(p.Busy) == 0 {
		return p, fmt.Errorf("pause the event source: %s has no event source mapping from %s", function, sourceARN)
	}
	return p, nil
}
