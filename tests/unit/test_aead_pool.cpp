// The AEAD facade keeps at most a bounded number of keyed Botan objects alive (libsim/src/crypto/aead.cpp: 2048)
// and re-creates evicted ones from the key on their next use. These tests hold far more AEADs than that bound, so
// most operations run on re-created objects, and check every result against the Wycheproof known answers.
#include "vec_reader.h"

#include <sim/crypto.h>

#include <doctest/doctest.h>

#include <memory>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t many = 1500;  // sealing and opening: 3000 keyed objects

struct Case {
    sim::Bytes key, iv, aad, msg, ct_tag;
};

std::vector<Case> valid_cases(const std::string& file, const std::string& name) {
    std::vector<Case> out;
    for (const auto& r : simtest::read_vec_file(file)) {
        if (r.section == name && r.get("result") == "valid") {
            auto ct = r.hex("ct");
            const auto tag = r.hex("tag");
            ct.insert(ct.end(), tag.begin(), tag.end());
            out.push_back({r.hex("key"), r.hex("iv"), r.hex("aad"), r.hex("msg"), std::move(ct)});
        }
    }
    return out;
}

struct Subject {
    const Case* c;
    std::unique_ptr<sim::crypto::Aead> aead;
};

std::vector<Subject> make_subjects(const std::vector<Case>& cases, sim::crypto::AeadAlgorithm alg, std::size_t n) {
    std::vector<Subject> out;
    for (std::size_t i = 0; i < n; ++i) {
        const Case& c = cases[i % cases.size()];
        auto a = sim::crypto::make_aead(alg, c.key);
        REQUIRE(a);
        out.push_back({&c, std::move(*a)});
    }
    return out;
}

// Every subject seals (must give the known ciphertext), opens it, and refuses it with one bit flipped.
std::size_t run_round(std::vector<Subject>& subjects) {
    std::size_t failures = 0;
    for (auto& s : subjects) {
        const auto sealed = s.aead->seal(s.c->iv, s.c->aad, s.c->msg);
        if (!sealed || *sealed != s.c->ct_tag) {
            ++failures;
        }
        const auto opened = s.aead->open(s.c->iv, s.c->aad, s.c->ct_tag);
        if (!opened || *opened != s.c->msg) {
            ++failures;
        }
        auto bad = s.c->ct_tag;
        bad.back() ^= 0x01U;
        if (s.aead->open(s.c->iv, s.c->aad, bad)) {
            ++failures;
        }
    }
    return failures;
}

}  // namespace

TEST_CASE("AEADs beyond the live-object bound still give the known answers") {
    const std::pair<sim::crypto::AeadAlgorithm, std::vector<Case>> algs[] = {
        {sim::crypto::AeadAlgorithm::aes256_gcm, valid_cases("wycheproof/aes256_gcm.vec", "AES-256/GCM")},
        {sim::crypto::AeadAlgorithm::chacha20_poly1305,
         valid_cases("wycheproof/chacha20_poly1305.vec", "ChaCha20Poly1305")},
    };
    for (const auto& [alg, cases] : algs) {
        REQUIRE(cases.size() > 10);
        auto subjects = make_subjects(cases, alg, many);
        for (int round = 0; round < 3; ++round) {
            CHECK(run_round(subjects) == 0);
        }
    }
}

TEST_CASE("rekey reaches evicted objects") {
    const auto cases = valid_cases("wycheproof/aes256_gcm.vec", "AES-256/GCM");
    REQUIRE(cases.size() > 10);
    auto subjects = make_subjects(cases, sim::crypto::AeadAlgorithm::aes256_gcm, many);
    CHECK(run_round(subjects) == 0);  // every object keyed and used, most evicted again since
    // Shift every subject to the next case: its key and expected answers change.
    for (std::size_t i = 0; i < subjects.size(); ++i) {
        subjects[i].c = &cases[(i + 1) % cases.size()];
        REQUIRE(subjects[i].aead->rekey(subjects[i].c->key));
    }
    CHECK(run_round(subjects) == 0);
}

TEST_CASE("AEADs used from several threads while the others evict them") {
    const auto cases = valid_cases("wycheproof/aes256_gcm.vec", "AES-256/GCM");
    REQUIRE(cases.size() > 10);
    constexpr std::size_t threads = 4;
    std::vector<std::vector<Subject>> sets;
    for (std::size_t t = 0; t < threads; ++t) {
        sets.push_back(make_subjects(cases, sim::crypto::AeadAlgorithm::aes256_gcm, many / 2));
    }
    std::vector<std::size_t> failures(threads, 0);
    std::vector<std::thread> workers;
    for (std::size_t t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (int round = 0; round < 3; ++round) {
                failures[t] += run_round(sets[t]);
            }
        });
    }
    for (auto& w : workers) {
        w.join();
    }
    for (std::size_t t = 0; t < threads; ++t) {
        CHECK(failures[t] == 0);
    }
}
