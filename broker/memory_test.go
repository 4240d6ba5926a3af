package broker_test

import (
	"testing"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/broker/brokertest"
)

func TestMemoryContract(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, history int) broker.Broker {
		b := broker.NewMemory(broker.Config{HistorySize: history})
		t.Cleanup(func() { b.Close() })
		return b
	})
}
