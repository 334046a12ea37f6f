module fuzzfixture

go 1.26
