package mux

// Priority orders a session's streams when more of them have data to send
// than the connection takes at once. Streams of higher priority go first;
// streams of equal priority take turns, a frame's worth each. A stream's
// priority is its own side's choice and does not travel on the wire: each
// side schedules what it sends.
//
// Priority is strict: while a stream of higher priority has data waiting,
// one of lower priority sends nothing, so keep high priorities for streams
// that send little and need it soon (a small call beside bulk transfers),
// not for bulk. Every stream starts at PriorityNormal.
type Priority int8

// The usual priorities; any value of the type is valid, and higher goes
// first.
const (
	PriorityLow    Priority = -1
	PriorityNormal Priority = 0
	PriorityHigh   Priority = 1
)

// SetPriority sets the priority of the stream's data (see Priority) from
// its next frame on; a write waiting for its turn keeps its place. On the
// Smux transport, which schedules streams itself, it has no effect.
func (st *Stream) SetPriority(p Priority) {
	if st.sm != nil {
		return
	}
	st.sess.wmu.Lock()
	st.priority = p
	st.sess.wmu.Unlock()
}

// Priority returns the stream's priority, PriorityNormal unless SetPriority
// changed it; on the Smux transport always PriorityNormal.
func (st *Stream) Priority() Priority {
	if st.sm != nil {
		return PriorityNormal
	}
	st.sess.wmu.Lock()
	defer st.sess.wmu.Unlock()
	return st.priority
}
