package broker

// retainLocked adds ev to the ring; a full ring drops its oldest event,
// which becomes the base.
func (h *Hub) retainLocked(ev *Event) {
	n := len(h.history)
	if n == 0 {
		h.base, h.baseKnown = ev.Position, true
		return
	}
	if h.histLen == n {
		old := h.history[h.histStart]
		h.base, h.baseKnown = old.Position, true
		h.history[h.histStart] = ev
		h.histStart = (h.histStart + 1) % n
		return
	}
	h.history[(h.histStart+h.histLen)%n] = ev
	h.histLen++
}

func (h *Hub) historyAt(i int) *Event { return h.history[(h.histStart+i)%len(h.history)] }

// setBase is Memory's Checkpoint.SetBase.
func (h *Hub) setBase(pos Position) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.baseKnown && !h.base.Less(pos) {
		return
	}
	h.base, h.baseKnown = pos, true
	if h.last.Less(pos) {
		h.last = pos
	}
	// Retained events at or before the new base are out of the window (a
	// recreated slot leaves a gap after them).
	for h.histLen > 0 && !pos.Less(h.historyAt(0).Position) {
		h.history[h.histStart] = nil
		h.histStart = (h.histStart + 1) % len(h.history)
		h.histLen--
	}
	h.notifyLocked()
}

// markDelivered is Memory's Checkpoint.MarkDelivered.
func (h *Hub) markDelivered(pos Position) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.delivered.Less(pos) {
		h.delivered = pos
	}
}

// retained is Memory's Checkpoint.Retained.
func (h *Hub) retained() (base, first Position) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.baseKnown {
		base = h.base
	}
	if h.histLen > 0 {
		first = h.historyAt(0).Position
	}
	return base, first
}
