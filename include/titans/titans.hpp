// titans/titans.hpp: the one header most programs include.
#pragma once

#include "titans/error.hpp"
#include "titans/memory.hpp"
#include "titans/memory_config.hpp"
