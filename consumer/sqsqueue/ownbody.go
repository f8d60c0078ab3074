package sqsqueue

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// OwnBody is an SQS client or per-call option (the CLI sets it on its
// client, the consumer on its receives):
// the HTTP transport gets its own copy of the request body.
//
// smithy-go closes the request body as soon as the response headers have
// arrived, which races with the transport still finishing the request
// write; when the race is lost the transport closes the connection while
// the response body is read ("deserialization failed ... use of closed
// network connection"), and the SDK retries the call
// (aws/aws-sdk-go-v2#1825, #2737). For ReceiveMessage the retry is not
// harmless: the messages the lost response carried stay invisible for the
// visibility timeout, so a redrive or a peek would end early without them.
// Against a local emulator it happened to about one receive in a hundred.
func OwnBody(o *sqs.Options) {
	if o.HTTPClient != nil {
		o.HTTPClient = ownBodyClient{o.HTTPClient}
	}
}

type ownBodyClient struct{ next sqs.HTTPClient }

func (c ownBodyClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return c.next.Do(req)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	own := req.Clone(req.Context())
	own.Body = io.NopCloser(bytes.NewReader(body))
	own.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return c.next.Do(own)
}
