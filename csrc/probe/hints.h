// Names of the posix_fadvise and madvise hints the probe applies.
#pragma once

#include <string>
#include <vector>

namespace cmio::probe {

// Throw std::invalid_argument naming the hint and listing the valid ones.
int fadvise_advice(const std::string& name);
int madvise_advice(const std::string& name);
std::vector<std::string> fadvise_names();
std::vector<std::string> madvise_names();

}  // namespace cmio::probe
