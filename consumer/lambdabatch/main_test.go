package lambdabatch_test

import (
	"testing"

	"github.com/socialdata/enricher/internal/testbed"
)

func TestMain(m *testing.M) { testbed.VerifyTestMain(m) }
