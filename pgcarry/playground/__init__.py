"""The playground: throwaway local PostgreSQL clusters and Kafka brokers, and the demo shop schema.

Used by the tests, the benchmarks and `pgcarry demo`; nothing in capture, the change log or replay
imports it.
"""
