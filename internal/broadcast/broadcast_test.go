package broadcast_test

import (
	"sync"
	"testing"

	"github.com/socialdata/enricher/internal/broadcast"
)

func TestNotifyWakesEveryWaiterOnce(t *testing.T) {
	var mu sync.Mutex
	var s broadcast.Signal
	state := 0

	mu.Lock()
	c := s.C()
	mu.Unlock()
	select {
	case <-c:
		t.Fatal("closed before any Notify")
	default:
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			mu.Lock()
			for state == 0 {
				c := s.C()
				mu.Unlock()
				<-c
				mu.Lock()
			}
			mu.Unlock()
		})
	}
	mu.Lock()
	state = 1
	s.Notify()
	mu.Unlock()
	wg.Wait()
	<-c // the channel taken before Notify is closed too

	mu.Lock()
	next := s.C()
	mu.Unlock()
	select {
	case <-next:
		t.Fatal("the channel after Notify is closed already")
	default:
	}
	s.Notify()
	s.Notify() // a Notify with nobody waiting is fine
	<-next
}
