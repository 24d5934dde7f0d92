// titans/titans.hpp: the one header most programs include.
#pragma once

#include "titans/error.hpp"
#include "titans/memory.hpp"
#include "titans/memory_config.hpp"
#include "titans/model.hpp"
#include "titans/model_config.hpp"
#include "titans/session.hpp"
#include "titans/tensor.hpp"
