// Package broadcast has Signal, a condition variable that works with
// select: a waiter takes the channel of the next change while it holds its
// own lock, releases the lock, and selects on that channel together with
// its context. Notify closes the channel and starts a new one.
package broadcast

// Signal wakes every goroutine waiting for the next change of some state.
// It has no lock of its own: call C and Notify with the lock that guards
// the state held. The zero value is ready to use.
type Signal struct {
	ch chan struct{}
}

// C returns a channel that is closed at the next Notify.
func (s *Signal) C() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes every goroutine waiting on a channel C returned.
func (s *Signal) Notify() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
